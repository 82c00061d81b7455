"""Logging configuration shared by the CLI and every server worker.

Secrets never reach a log: the access line names the key, never its secret, and no header is logged.
"""

from __future__ import annotations

from typing import Any

ACCESS_LOGGER = "modeldex.access"


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """A dictConfig for modeldex's loggers and the server's own (granian), all on stderr."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        },
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"},
        },
        "loggers": {
            "modeldex": {"handlers": ["stderr"], "level": level, "propagate": False},
            "_granian": {"handlers": ["stderr"], "level": level, "propagate": False},
            "granian.access": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
        },
    }
