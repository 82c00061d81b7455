"""The OpenAI Models routes, on a hand-written ASGI hot path.

`GET /v1/models`, `GET /v1/models/{model_id}` and `DELETE /v1/models/{model_id}` are what clients call
constantly, so they skip the framework: route on the raw path, check the key against the in-memory key
table, pick the view of the key's access policy, and send bytes rendered once per catalog version.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl

from modeldex.api import errors, paths
from modeldex.api.errors import ApiError
from modeldex.api.auth import authenticate, charge, header
from modeldex.api.render import RenderedCatalog, deleted_object
from modeldex.api.routes import REQUEST_ID_SCOPE_KEY
from modeldex.catalog.errors import Conflict, NotFound
from modeldex.catalog.keys import ApiKey
from modeldex.catalog.live import LiveCatalog
from modeldex.catalog.service import Catalog
from modeldex.ops.ratelimit import RateLimiter
from modeldex.store import CatalogStore, StoreUnavailable

Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

LIST_PATH = "/v1/models"
ITEM_PREFIX = "/v1/models/"
LIST_METHODS = ("GET", "HEAD")
ITEM_METHODS = ("GET", "HEAD", "DELETE")
_JSON = (b"content-type", b"application/json")
# Answers depend on the key: browsers may keep them but must revalidate; shared caches must not store.
_CACHE_CONTROL = (b"cache-control", b"private, no-cache")
_VARY = (b"vary", b"Authorization")


async def send_json(send: Send, status: int, body: bytes, request_id: bytes, head: bool = False,
                    extra_headers: tuple[tuple[bytes, bytes], ...] | Headers = ()) -> None:
    headers = [_JSON, (b"content-length", str(len(body)).encode()), (b"x-request-id", request_id)]
    headers.extend(extra_headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


def etag_matches(if_none_match: bytes | None, etag: bytes) -> bool:
    """If-None-Match uses the weak comparison: `W/` prefixes do not matter."""
    if if_none_match is None:
        return False
    if if_none_match.strip() == b"*":
        return True
    return any(tag.strip().removeprefix(b"W/") == etag for tag in if_none_match.split(b","))


def wants_metadata(query_string: bytes) -> bool:
    """`?expand=metadata` (also `expand[]=metadata` or a comma list) asks for metadata."""
    return any(name in ("expand", "expand[]") and "metadata" in value.split(",")
               for name, value in parse_qsl(query_string.decode("latin-1")))


class ModelsRoutes:
    def __init__(self, live: LiveCatalog[RenderedCatalog], store: CatalogStore, limiter: RateLimiter,
                 metadata_by_default: bool = False) -> None:
        self.live = live
        self.store = store
        self.limiter = limiter
        self.metadata_by_default = metadata_by_default

    def route(self, raw_path: str) -> tuple[str, str | None] | None:
        """('list', None), ('item', model_id) or None when the path is not a Models route."""
        path = paths.normalize(raw_path)
        if path == LIST_PATH:
            return ("list", None)
        if path.startswith(ITEM_PREFIX) and len(path) > len(ITEM_PREFIX):
            return ("item", paths.decode_id(path[len(ITEM_PREFIX):]))
        return None

    async def handle(self, scope: dict[str, Any], send: Send, route: tuple[str, str | None]) -> None:
        """Answer one request. Leaves the key's name in the scope for the access log."""
        kind, model_id = route
        method = scope["method"]
        request_id: bytes = scope[REQUEST_ID_SCOPE_KEY]
        limit_headers: Headers = []
        try:
            allowed = LIST_METHODS if kind == "list" else ITEM_METHODS
            if method not in allowed:
                raise errors.method_not_allowed(method, scope["path"], allowed)
            rendered = self.live.current
            key = await authenticate(rendered, scope, self.limiter)
            limit_headers = await charge(key, scope, self.limiter)
            if method == "DELETE":
                assert model_id is not None
                await self._delete(key, model_id, send, request_id, limit_headers)
                return
            view = rendered.view(key.policy)
            etag = view.etag
            bodies, list_body = view.bodies, view.list_body
            query = scope.get("query_string")
            if self.metadata_by_default or (query and wants_metadata(query)):
                bodies, list_body = view.expanded()
                etag = etag[:-1] + b'-m"'
            body = list_body if kind == "list" else bodies.get(model_id)  # type: ignore[arg-type]
            if body is None:
                raise errors.model_not_found(model_id or "")
            response_headers = [(b"etag", etag), _CACHE_CONTROL, _VARY, *limit_headers]
            if etag_matches(header(scope["headers"], b"if-none-match"), etag):
                await send({"type": "http.response.start", "status": 304,
                            "headers": [(b"x-request-id", request_id), *response_headers]})
                await send({"type": "http.response.body", "body": b""})
                return
            await send_json(send, 200, body, request_id, method == "HEAD", response_headers)
        except ApiError as error:
            await send_json(send, error.status, error.body(), request_id, method == "HEAD",
                            [*error.headers, *limit_headers])

    async def _delete(self, key: ApiKey, model_id: str, send: Send, request_id: bytes, limit_headers: Headers
                      ) -> None:
        if not key.is_admin:
            raise errors.insufficient_scope("deleting a model")
        catalog = Catalog(self.store, actor=f"key:{key.name}")
        try:
            await asyncio.to_thread(catalog.remove_model, model_id)
        except NotFound:
            raise errors.model_not_found(model_id) from None
        except Conflict as exc:
            raise ApiError(409, str(exc), code="conflict") from None
        except StoreUnavailable:
            raise errors.store_unavailable() from None
        # Read-your-writes: this worker serves the change from its next request on.
        with contextlib.suppress(StoreUnavailable):
            await asyncio.to_thread(self.live.refresh)
        await send_json(send, 200, deleted_object(model_id), request_id, extra_headers=limit_headers)
