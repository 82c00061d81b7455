"""The served view of a catalog state: response bytes made once per catalog version and key policy,
not per request.

Keys with the same access policy share one `View`: the models and aliases they may see, as rendered
bytes, and the list. A model the key may not see is simply absent, so its 404 is the same as for a
model that does not exist. Models past their `shutdown_date` are absent from every view; `expires_at`
tells the LiveCatalog when the next one passes, so it rebuilds then without any write.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

import orjson

from modeldex.catalog.keys import ApiKey, lookup_id_of, verify
from modeldex.catalog.models import Model
from modeldex.catalog.policy import AccessPolicy, Visibility
from modeldex.catalog.state import CatalogState


def model_object(model: Model, model_id: str | None = None) -> dict[str, Any]:
    """The OpenAI Model object, exactly the seed's four fields."""
    return {"id": model_id or model.id, "object": "model", "created": model.created, "owned_by": model.owned_by}


def model_object_with_metadata(model: Model, model_id: str | None = None) -> dict[str, Any]:
    """The Model object plus metadata, in the field names OpenRouter-style clients (LibreChat, ...) read."""
    body = model_object(model, model_id)
    if model.name is not None:
        body["name"] = model.name
    if model.description is not None:
        body["description"] = model.description
    if model.context_length is not None:
        body["context_length"] = model.context_length
    if model.max_output_tokens is not None:
        body["max_output_tokens"] = model.max_output_tokens
    if model.input_modalities is not None or model.output_modalities is not None:
        body["architecture"] = {"input_modalities": list(model.input_modalities or ()),
                                "output_modalities": list(model.output_modalities or ())}
    if model.pricing is not None:
        body["pricing"] = model.pricing.model_dump(exclude_none=True)
    if model.context_length is not None or model.max_output_tokens is not None:
        body["top_provider"] = {"context_length": model.context_length,
                                "max_completion_tokens": model.max_output_tokens}
    if model.shutdown_date is not None:
        body["shutdown_date"] = model.shutdown_date
    if model.replaced_by is not None:
        body["replaced_by"] = model.replaced_by
    if model.stale_since is not None:
        body["stale"] = True  # discovered, and its upstream has not confirmed it lately (see discovery)
    return body


def _compact(body: bytes) -> bytes:
    """A right-sized copy: orjson's result keeps its ~4 KB working buffer allocated, which for 100,000
    small bodies is ~400 MB of slack (measured; the copy is ~16 MB)."""
    return bytes(memoryview(body))


def deleted_object(model_id: str) -> bytes:
    return orjson.dumps({"id": model_id, "object": "model", "deleted": True})


Entry = tuple[str, Model, bool]  # (id served, model whose fields it answers with, shown in the list)


class View:
    """What one access policy sees at one catalog version: bytes for retrieve and list, and an ETag."""

    __slots__ = ("bodies", "list_body", "etag", "_entries", "_expanded", "_lock")

    def __init__(self, entries: list[Entry], etag: bytes) -> None:
        self._entries = entries
        self.bodies, self.list_body = self._render(model_object)
        self.etag = etag
        self._expanded: tuple[dict[str, bytes], bytes] | None = None
        self._lock = threading.Lock()

    def _render(self, make: Any) -> tuple[dict[str, bytes], bytes]:
        bodies = {entry_id: _compact(orjson.dumps(make(model, entry_id))) for entry_id, model, _listed in self._entries}
        listed = [bodies[entry_id] for entry_id, _model, shown in self._entries if shown]
        return bodies, b'{"object":"list","data":[' + b",".join(listed) + b"]}"

    def expanded(self) -> tuple[dict[str, bytes], bytes]:
        """Bodies and list with metadata: rendered on first request, as few deployments ask for them."""
        if self._expanded is None:
            with self._lock:
                if self._expanded is None:
                    self._expanded = self._render(model_object_with_metadata)
        return self._expanded


class RenderedCatalog:
    """What the hot path reads: active keys by lookup id, and one View per access policy in use."""

    def __init__(self, state: CatalogState, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.version = state.version
        self.now = now
        self.keys_by_lookup: dict[str, ApiKey] = {key.lookup_id: key for key in state.keys}
        self.models = {model.id: model for model in state.models}
        self.aliases = {alias.id: alias for alias in state.aliases}
        self.groups = {group.name: group for group in state.groups}
        upcoming = [at for m in state.models if (at := m.shutdown_at()) is not None and at > now]
        self.expires_at: float | None = min(upcoming) if upcoming else None
        # Every entry that could be served, in list order: models, and aliases with their target's fields.
        entries: list[Entry] = [(m.id, m, True) for m in state.models]
        entries += [(a.id, self.models[a.target], not a.hidden) for a in state.aliases if a.target in self.models]
        entries.sort(key=lambda entry: (-entry[1].created, entry[0]))
        self._entries = entries
        self._views: dict[AccessPolicy, View] = {}
        self._lock = threading.Lock()

    def visibility(self, policy: AccessPolicy) -> Visibility:
        return Visibility(policy, self.models, self.aliases, self.groups, self.now)

    def view(self, policy: AccessPolicy) -> View:
        view = self._views.get(policy)
        if view is None:
            with self._lock:
                view = self._views.get(policy)
                if view is None:
                    view = self._views[policy] = self._build_view(policy)
        return view

    def _build_view(self, policy: AccessPolicy) -> View:
        decide = self.visibility(policy).decide
        tag = hashlib.blake2b(orjson.dumps(policy.document()), digest_size=6).hexdigest()
        return View([entry for entry in self._entries if decide(entry[0]).visible], f'"{self.version}-{tag}"'.encode())

    def authenticate(self, secret: str) -> ApiKey | None:
        lookup_id = lookup_id_of(secret)
        record = self.keys_by_lookup.get(lookup_id) if lookup_id is not None else None
        return record if verify(secret, record) else None
