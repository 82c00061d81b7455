"""The OpenAI Models routes, on a hand-written ASGI hot path.

`GET /v1/models`, `GET /v1/models/{model_id}` and `DELETE /v1/models/{model_id}` are what clients call
constantly, so they skip the framework: route on the raw path, check the key against the in-memory key
table, and send bytes rendered once per catalog version.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from modeldex.api import errors, paths
from modeldex.api.errors import ApiError
from modeldex.api.render import RenderedCatalog, deleted_object
from modeldex.catalog.errors import ModelNotFound
from modeldex.catalog.keys import ApiKey
from modeldex.catalog.live import LiveCatalog
from modeldex.catalog.service import Catalog

Send = Callable[[dict[str, Any]], Awaitable[None]]

LIST_PATH = "/v1/models"
ITEM_PREFIX = "/v1/models/"
LIST_METHODS = ("GET", "HEAD")
ITEM_METHODS = ("GET", "HEAD", "DELETE")
_JSON = (b"content-type", b"application/json")


async def send_json(send: Send, status: int, body: bytes, request_id: bytes, head: bool = False,
                    extra_headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    headers = [_JSON, (b"content-length", str(len(body)).encode()), (b"x-request-id", request_id)]
    headers.extend(extra_headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None when no usable one was sent."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() != b"bearer":
                return None
            token = token.strip()
            return token.decode("latin-1") if token else None
    return None


class ModelsRoutes:
    def __init__(self, live: LiveCatalog[RenderedCatalog], catalog: Catalog) -> None:
        self.live = live
        self.catalog = catalog

    def route(self, raw_path: str) -> tuple[str, str | None] | None:
        """('list', None), ('item', model_id) or None when the path is not a Models route."""
        path = paths.normalize(raw_path)
        if path == LIST_PATH:
            return ("list", None)
        if path.startswith(ITEM_PREFIX) and len(path) > len(ITEM_PREFIX):
            return ("item", paths.decode_id(path[len(ITEM_PREFIX):]))
        return None

    async def handle(self, scope: dict[str, Any], send: Send, request_id: bytes,
                     route: tuple[str, str | None]) -> tuple[int, str | None]:
        """Answer one request; returns (status, key name) for the access log."""
        kind, model_id = route
        method = scope["method"]
        key: ApiKey | None = None
        try:
            allowed = LIST_METHODS if kind == "list" else ITEM_METHODS
            if method not in allowed:
                raise errors.method_not_allowed(method, scope["path"], allowed)
            view = self.live.current
            key = self._authenticate(view, scope["headers"])
            head = method == "HEAD"
            if kind == "list":
                await send_json(send, 200, view.list_body, request_id, head)
                return 200, key.name
            assert model_id is not None
            if method == "DELETE":
                await self._delete(key, model_id, send, request_id)
                return 200, key.name
            body = view.model_bodies.get(model_id)
            if body is None:
                raise errors.model_not_found(model_id)
            await send_json(send, 200, body, request_id, head)
            return 200, key.name
        except ApiError as error:
            await send_json(send, error.status, error.body(), request_id, method == "HEAD", error.headers)
            return error.status, key.name if key is not None else None

    @staticmethod
    def _authenticate(view: RenderedCatalog, headers: list[tuple[bytes, bytes]]) -> ApiKey:
        token = bearer_token(headers)
        if token is None:
            raise errors.missing_key()
        key = view.authenticate(token)
        if key is None:
            raise errors.invalid_key(token)
        return key

    async def _delete(self, key: ApiKey, model_id: str, send: Send, request_id: bytes) -> None:
        if not key.is_admin:
            raise errors.insufficient_scope("deleting a model")
        try:
            await asyncio.to_thread(self.catalog.remove_model, model_id)
        except ModelNotFound:
            raise errors.model_not_found(model_id) from None
        # Read-your-writes: this worker serves the change from its next request on.
        await asyncio.to_thread(self.live.refresh)
        await send_json(send, 200, deleted_object(model_id), request_id)
