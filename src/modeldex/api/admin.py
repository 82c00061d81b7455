"""The admin API under /v1/admin/: models, aliases, groups, keys, the change feed and catalog files.

Admin keys only. Entities carry a revision: reads answer it as an `ETag`, writes honour `If-Match` and
answer 412 when it is stale, so two operators never silently overwrite each other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modeldex.api import errors
from modeldex.api.errors import ApiError
from modeldex.api.render import RenderedCatalog
from modeldex.api.upstreams import upstream_routes
from modeldex.catalog.catalog_file import dump_yaml, load_yaml
from modeldex.catalog.errors import AlreadyExists, CatalogError, Conflict, InvalidInput, NotFound, PreconditionFailed
from modeldex.catalog.keys import ApiKey
from modeldex.catalog.live import LiveCatalog
from modeldex.catalog.service import Catalog
from modeldex.api.auth import authenticate, charge
from modeldex.ops.ratelimit import RateLimiter
from modeldex.store import CatalogStore, StoreUnavailable
from modeldex.store.base import UNCHANGED

MAX_BODY_BYTES = 4 * 1024 * 1024
COLLECTIONS = {"models": "model", "aliases": "alias", "groups": "group", "upstreams": "upstream"}
Handler = Callable[[Request], Awaitable[Response]]


def json_response(data: Any, status: int = 200, etag: int | None = None) -> Response:
    headers = {"cache-control": "no-store"}
    if etag is not None:
        headers["etag"] = f'"{etag}"'
    return Response(orjson.dumps(data), status_code=status, media_type="application/json", headers=headers)


def domain_error(exc: CatalogError) -> ApiError:
    if isinstance(exc, InvalidInput):
        return ApiError(400, exc.message, param=exc.field, code="invalid_value")
    if isinstance(exc, NotFound):
        code = "model_not_found" if exc.kind == "model" else f"{exc.kind}_not_found"
        return ApiError(404, str(exc), param="model" if exc.kind == "model" else None, code=code)
    if isinstance(exc, AlreadyExists):
        return ApiError(409, str(exc), code="already_exists")
    if isinstance(exc, PreconditionFailed):
        return ApiError(412, str(exc), code="precondition_failed")
    if isinstance(exc, Conflict):
        return ApiError(409, str(exc), code="conflict")
    return ApiError(400, str(exc))


def if_match(request: Request) -> int | None:
    """The revision an `If-Match` header names (None when absent or `*`); unreadable ones never match."""
    value = request.headers.get("if-match")
    if value is None or value.strip() == "*":
        return None
    tag = value.strip().removeprefix("W/").strip('"')
    try:
        return int(tag)
    except ValueError:
        return -1


async def read_body(request: Request) -> bytes:
    """The body, refused with 413 as soon as it exceeds the server's limit (before it is all read)."""
    limit = getattr(request.app.state, "max_body_bytes", MAX_BODY_BYTES)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise errors.body_too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise errors.body_too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def json_body(request: Request) -> dict[str, Any]:
    body = await read_body(request)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(400, "The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    return data


def with_revision(document: dict[str, Any], revision: int) -> dict[str, Any]:
    return {**document, "revision": revision}


class AdminRoutes:
    def __init__(self, live: LiveCatalog[RenderedCatalog], store: CatalogStore, limiter: RateLimiter) -> None:
        self.live = live
        self.store = store
        self.limiter = limiter

    async def _admin(self, request: Request) -> tuple[ApiKey, list[tuple[str, str]]]:
        """The admin key of the request, and the rate-limit headers its answer carries. Leaves the key's
        name in the scope for the access log."""
        key = await authenticate(self.live.current, request.headers.get("authorization"),
                                 request.scope.get("modeldex.client", "unknown"), self.limiter)
        request.scope["modeldex.key"] = key.name
        limit_headers = await charge(key, self.limiter)
        if not key.is_admin:
            raise errors.insufficient_scope("the admin API")
        return key, limit_headers

    def endpoint(self, operation: Callable[[Request, Catalog], Awaitable[Response]], writes: bool = False
                 ) -> Handler:
        """Authenticate, run, map domain errors; after a write, refresh so this worker serves it at once."""

        async def handler(request: Request) -> Response:
            key, limit_headers = await self._admin(request)
            catalog = Catalog(self.store, actor=f"key:{key.name}")
            try:
                response = await operation(request, catalog)
            except CatalogError as exc:
                raise domain_error(exc) from None
            except StoreUnavailable:
                raise errors.store_unavailable() from None
            if writes:
                with contextlib.suppress(StoreUnavailable):  # the refresher catches up later
                    await run_in_threadpool(self.live.refresh)
            for name, value in limit_headers:
                response.headers[name] = value
            return response

        return handler

    # --- models, aliases, groups ---------------------------------------------------------------------

    async def list_entities(self, kind: str, request: Request, catalog: Catalog) -> Response:
        entries = await run_in_threadpool(catalog.list, kind)
        return json_response({"object": "list", "data": [with_revision(e.document(), r) for e, r in entries]})

    async def create_entity(self, kind: str, request: Request, catalog: Catalog) -> Response:
        data = await json_body(request)
        entity, revision = await run_in_threadpool(catalog.create, kind, data)
        return json_response(with_revision(entity.document(), revision), 201, revision)

    async def get_entity(self, kind: str, request: Request, catalog: Catalog) -> Response:
        entity, revision = await run_in_threadpool(catalog.get, kind, request.path_params["key"])
        return json_response(with_revision(entity.document(), revision), etag=revision)

    async def update_entity(self, kind: str, request: Request, catalog: Catalog) -> Response:
        data = await json_body(request)
        data.pop("revision", None)
        entity, revision = await run_in_threadpool(
            catalog.update, kind, request.path_params["key"], data, if_match(request))
        return json_response(with_revision(entity.document(), revision), etag=revision)

    async def delete_entity(self, kind: str, request: Request, catalog: Catalog) -> Response:
        key = request.path_params["key"]
        await run_in_threadpool(catalog.delete, kind, key, if_match(request))
        return json_response({"id": key, "object": kind, "deleted": True})

    # --- keys ----------------------------------------------------------------------------------------

    async def list_keys(self, request: Request, catalog: Catalog) -> Response:
        include_revoked = request.query_params.get("all", "").lower() in ("1", "true", "yes")
        keys = await run_in_threadpool(catalog.list_keys, include_revoked)
        return json_response({"object": "list", "data": [with_revision(k.document(), k.revision) for k in keys]})

    async def create_key(self, request: Request, catalog: Catalog) -> Response:
        data = await json_body(request)
        unknown = sorted(set(data) - {"name", "scope", "policy", "rate_limit"})
        if unknown:
            raise InvalidInput(unknown[0], f"{unknown[0]}: unknown field")
        if not isinstance(data.get("name"), str):
            raise InvalidInput("name", "name: required, a string")
        record, secret = await run_in_threadpool(
            catalog.create_key, data["name"], str(data.get("scope", "read")), data.get("policy"),
            _optional_str(data, "rate_limit"))
        # The secret is in this response and nowhere else, ever.
        return json_response({**with_revision(record.document(), record.revision), "secret": secret}, 201,
                             record.revision)

    async def get_key(self, request: Request, catalog: Catalog) -> Response:
        key = await run_in_threadpool(catalog.get_key, request.path_params["name"])
        return json_response(with_revision(key.document(), key.revision), etag=key.revision)

    async def update_key(self, request: Request, catalog: Catalog) -> Response:
        data = await json_body(request)
        data.pop("revision", None)
        unknown = sorted(set(data) - {"scope", "policy", "name", "rate_limit"})
        if unknown:
            raise InvalidInput(unknown[0], f"{unknown[0]}: unknown field (a key's scope, policy and rate_limit "
                               "can change)")
        rate_limit = _optional_str(data, "rate_limit") if "rate_limit" in data else UNCHANGED
        key = await run_in_threadpool(catalog.update_key, request.path_params["name"], data.get("scope"),
                                      data.get("policy"), if_match(request), rate_limit)
        return json_response(with_revision(key.document(), key.revision), etag=key.revision)

    async def revoke_key(self, request: Request, catalog: Catalog) -> Response:
        name = request.path_params["name"]
        await run_in_threadpool(catalog.revoke_key, name, if_match(request))
        return json_response({"id": name, "object": "key", "deleted": True})

    async def explain(self, request: Request, catalog: Catalog) -> Response:
        model_id = request.query_params.get("model")
        if not model_id:
            raise InvalidInput("model", "model: the query parameter ?model=ID is required")
        name = request.path_params["name"]
        decision = await run_in_threadpool(catalog.explain, name, model_id)
        return json_response({"key": name, "model": model_id, "visible": decision.visible, "rule": decision.rule})

    # --- change feed and catalog files ---------------------------------------------------------------

    async def changes(self, request: Request, catalog: Catalog) -> Response:
        since = _int_param(request, "since", 0, 0)
        limit = _int_param(request, "limit", 1000, 1, 10_000)
        entries = await run_in_threadpool(catalog.changes, since, limit + 1)
        version = await run_in_threadpool(catalog.version)
        return json_response({
            "object": "list",
            "data": [c.document() for c in entries[:limit]],
            "version": version,
            "has_more": len(entries) > limit,
        })

    async def export(self, request: Request, catalog: Catalog) -> Response:
        document = await run_in_threadpool(catalog.export)
        if request.query_params.get("format") == "yaml":
            return Response(dump_yaml(document), media_type="application/yaml")
        return json_response(document)

    async def apply(self, request: Request, catalog: Catalog) -> Response:
        body = await read_body(request)
        document = load_yaml(body.decode("utf-8", errors="replace"))  # YAML is a superset of JSON
        prune = request.query_params.get("prune", "").lower() in ("1", "true", "yes")
        dry_run = request.query_params.get("dry_run", "").lower() in ("1", "true", "yes")
        version, planned = await run_in_threadpool(catalog.apply, document, prune, dry_run)
        return json_response({"version": version, "dry_run": dry_run, "changes": [p.document() for p in planned]})

    def routes(self) -> list[Route]:
        e = self.endpoint
        routes = [
            Route("/v1/admin/changes", e(self.changes), methods=["GET"]),
            Route("/v1/admin/catalog", e(self.export), methods=["GET"]),
            Route("/v1/admin/catalog/apply", e(self.apply, writes=True), methods=["POST"]),
            Route("/v1/admin/keys", e(self.list_keys), methods=["GET"]),
            Route("/v1/admin/keys", e(self.create_key, writes=True), methods=["POST"]),
            Route("/v1/admin/keys/{name}/explain", e(self.explain), methods=["GET"]),
            Route("/v1/admin/keys/{name}", e(self.get_key), methods=["GET"]),
            Route("/v1/admin/keys/{name}", e(self.update_key, writes=True), methods=["PATCH"]),
            Route("/v1/admin/keys/{name}", e(self.revoke_key, writes=True), methods=["DELETE"]),
            *upstream_routes(self),  # before the generic ones: their reads include health
        ]
        for collection, kind in COLLECTIONS.items():
            base = f"/v1/admin/{collection}"
            routes += [
                Route(base, e(partial(self.list_entities, kind)), methods=["GET"]),
                Route(base, e(partial(self.create_entity, kind), writes=True), methods=["POST"]),
                Route(base + "/{key:path}", e(partial(self.get_entity, kind)), methods=["GET"]),
                Route(base + "/{key:path}", e(partial(self.update_entity, kind), writes=True), methods=["PATCH"]),
                Route(base + "/{key:path}", e(partial(self.delete_entity, kind), writes=True), methods=["DELETE"]),
            ]
        return routes


def _optional_str(data: dict[str, Any], field: str) -> str | None:
    value = data.get(field)
    if value is not None and not isinstance(value, str):
        raise InvalidInput(field, f"{field}: must be a string such as \"600/m\", or null")
    return value


def _int_param(request: Request, name: str, default: int, low: int, high: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(name, f"{name}: must be an integer") from None
    if value < low or (high is not None and value > high):
        raise InvalidInput(name, f"{name}: must be between {low} and {high}" if high else f"{name}: must be >= {low}")
    return value
