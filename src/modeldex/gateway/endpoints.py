"""The inference routes: which API protocol each speaks and how its body names the model."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Endpoint:
    path: str  # as the client sends it: /v1/chat/completions
    protocol: str  # "openai" or "anthropic": an upstream must speak it
    multipart: bool = False  # the model is a form field (audio uploads), not a JSON member
    label: str = ""  # the metrics and access-log route label

    @property
    def upstream_path(self) -> str:
        """What follows an upstream's base URL (which ends in /v1)."""
        return self.path[len("/v1"):]


_OPENAI_JSON = ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/embeddings", "/v1/moderations",
                "/v1/images/generations", "/v1/audio/speech")
_OPENAI_MULTIPART = ("/v1/audio/transcriptions", "/v1/audio/translations")
_ANTHROPIC = ("/v1/messages", "/v1/messages/count_tokens")

ENDPOINTS: dict[str, Endpoint] = {
    **{p: Endpoint(p, "openai", label="inference:" + p[4:]) for p in _OPENAI_JSON},
    **{p: Endpoint(p, "openai", multipart=True, label="inference:" + p[4:]) for p in _OPENAI_MULTIPART},
    **{p: Endpoint(p, "anthropic", label="inference:" + p[4:]) for p in _ANTHROPIC},
}
