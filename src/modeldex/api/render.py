"""The served view of a catalog state: response bytes made once per catalog version, not per request."""

from __future__ import annotations

import orjson

from modeldex.catalog.keys import ApiKey, lookup_id_of, verify
from modeldex.catalog.models import Model
from modeldex.catalog.state import CatalogState


def model_object(model: Model) -> bytes:
    return orjson.dumps({"id": model.id, "object": "model", "created": model.created, "owned_by": model.owned_by})


def deleted_object(model_id: str) -> bytes:
    return orjson.dumps({"id": model_id, "object": "model", "deleted": True})


class RenderedCatalog:
    """What the hot path reads: model id -> retrieve body, the list body, and active keys by lookup id."""

    __slots__ = ("version", "model_bodies", "list_body", "keys_by_lookup")

    def __init__(self, state: CatalogState) -> None:
        self.version = state.version
        self.model_bodies: dict[str, bytes] = {model.id: model_object(model) for model in state.models}
        self.list_body = b'{"object":"list","data":[' + b",".join(self.model_bodies.values()) + b"]}"
        self.keys_by_lookup: dict[str, ApiKey] = {key.lookup_id: key for key in state.keys}

    def authenticate(self, secret: str) -> ApiKey | None:
        lookup_id = lookup_id_of(secret)
        record = self.keys_by_lookup.get(lookup_id) if lookup_id is not None else None
        return record if verify(secret, record) else None
