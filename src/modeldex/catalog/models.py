"""The Model entity and the rules a model id must follow."""

from __future__ import annotations

import time
from dataclasses import dataclass

from modeldex.catalog.errors import InvalidInput

MAX_MODEL_ID_LENGTH = 256
MAX_OWNER_LENGTH = 128
# `?` and `#` would end the URL path; whitespace and control characters have no business in an id.
# U+FFFD is what undecodable request bytes turn into, so no real id may contain it.
_FORBIDDEN_ID_CHARS = frozenset("?#\ufffd") | frozenset(chr(c) for c in range(0x21)) | {"\x7f"}


@dataclass(frozen=True, slots=True)
class Model:
    """One entry of the catalog, in the OpenAI Model object's own terms."""

    id: str
    created: int
    owned_by: str


def validate_model_id(model_id: str) -> str:
    """Return `model_id` if it can be served and round-tripped through a URL path, else raise.

    Ids may contain `/`, `:` and `@` (`meta-llama/Llama-3.1-8B-Instruct`, `ft:gpt-4o:acme::x1`), but no
    path segment may be empty, `.` or `..`, so that no id can be confused with a different route.
    """
    if not model_id:
        raise InvalidInput("id", "model id must not be empty")
    if len(model_id) > MAX_MODEL_ID_LENGTH:
        raise InvalidInput("id", f"model id is longer than {MAX_MODEL_ID_LENGTH} characters")
    bad = sorted({ch for ch in model_id if ch in _FORBIDDEN_ID_CHARS or not ch.isprintable()})
    if bad:
        shown = ", ".join(repr(ch) for ch in bad)
        raise InvalidInput("id", f"model id contains characters that are not allowed: {shown}")
    for segment in model_id.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidInput("id", "model id must not contain empty, '.' or '..' path segments")
    return model_id


def new_model(model_id: str, owned_by: str = "system", created: int | None = None) -> Model:
    """Build a validated Model; `created` defaults to now, as OpenAI stamps new models."""
    validate_model_id(model_id)
    owned_by = owned_by.strip()
    if not owned_by or len(owned_by) > MAX_OWNER_LENGTH or not owned_by.isprintable():
        raise InvalidInput("owned_by", f"owned_by must be 1 to {MAX_OWNER_LENGTH} printable characters")
    if created is None:
        created = int(time.time())
    if isinstance(created, bool) or not isinstance(created, int) or not 0 <= created < 2**53:
        raise InvalidInput("created", "created must be a Unix timestamp in seconds (a non-negative integer)")
    return Model(id=model_id, created=created, owned_by=owned_by)


def list_order(model: Model) -> tuple[int, str]:
    """Newest first, then by id: stable across restarts and replicas."""
    return (-model.created, model.id)
