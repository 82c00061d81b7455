"""modeldex: an OpenAI-compatible model catalog service."""

__version__ = "0.1.0"
