"""The admin API under /v1/admin/: models, aliases, groups, upstreams, keys, the change feed and catalog
files (upstreams' own reads and sync are in admin_upstreams.py). Built on `admin_base.AdminEndpoints`.
"""

from __future__ import annotations

from functools import partial
from typing import Any
from urllib.parse import quote

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from modeldex.api.admin_base import (
    RouteTable,
    if_match,
    json_body,
    json_response,
    raw_json_response,
    read_body,
    with_revision,
)
from modeldex.catalog.catalog_file import dump_yaml, parse_catalog_file, plan_digest
from modeldex.catalog.changes import MAX_VERSION
from modeldex.catalog.errors import InvalidInput
from modeldex.catalog.kinds import KINDS, kind_named
from modeldex.catalog.repository import UNCHANGED
from modeldex.catalog.service import Catalog

# Fields reads answer that are not the entity's own (an upstream's `health`): a PATCH ignores them, as it
# does `revision`, so that what GET answers can be sent back as it is.
ANSWERED_ONLY: dict[str, tuple[str, ...]] = {"upstream": ("health",)}
# A key's fields that GET answers and no write sets: a PATCH takes them only with their current values.
KEY_READ_ONLY = ("key", "created_at", "revoked_at")


class AdminRoutes:
    """The generic admin routes, one handler per operation."""


    # --- models, aliases, groups ---------------------------------------------------------------------

    async def list_entities(self, kind: str, request: Request, catalog: Catalog) -> Response:
        def listing() -> bytes:
            return orjson.dumps({"object": "list", "data": [with_revision(e.document(), r)
                                                            for e, r in catalog.entries(kind)]})

        return raw_json_response(await run_in_threadpool(listing))

    async def create_entity(self, kind: str, request: Request, catalog: Catalog) -> Response:
        data = await json_body(request)
        entity, revision = await run_in_threadpool(catalog.create, kind, data)
        response = json_response(with_revision(entity.document(), revision), 201, revision)
        response.headers["location"] = _location(kind_named(kind).collection, kind_named(kind).key_of(entity))
        return response

    async def get_entity(self, kind: str, request: Request, catalog: Catalog) -> Response:
        entity, revision = await run_in_threadpool(catalog.get, kind, request.path_params["key"])
        return json_response(with_revision(entity.document(), revision), etag=revision)

    async def update_entity(self, kind: str, request: Request, catalog: Catalog) -> Response:
        data = await json_body(request)
        data.pop("revision", None)
        for field in ANSWERED_ONLY.get(kind, ()):  # so that what GET answers can be sent back as it is
            data.pop(field, None)
        key = request.path_params["key"]
        condition = await if_match(request, lambda: catalog.get(kind, key)[1])
        entity, revision = await run_in_threadpool(catalog.update, kind, key, data, condition)
        return json_response(with_revision(entity.document(), revision), etag=revision)

    async def delete_entity(self, kind: str, request: Request, catalog: Catalog) -> Response:
        key = request.path_params["key"]
        condition = await if_match(request, lambda: catalog.get(kind, key)[1])
        await run_in_threadpool(catalog.delete, kind, key, condition)
        return json_response({"id": key, "object": kind, "deleted": True})

    # --- keys ----------------------------------------------------------------------------------------

    async def list_keys(self, request: Request, catalog: Catalog) -> Response:
        include_revoked = _flag(request, "all")
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
        response = json_response({**with_revision(record.document(), record.revision), "secret": secret}, 201,
                                 record.revision)
        response.headers["location"] = _location("keys", record.name)
        return response

    async def get_key(self, request: Request, catalog: Catalog) -> Response:
        key = await run_in_threadpool(catalog.get_key, request.path_params["name"])
        return json_response(with_revision(key.document(), key.revision), etag=key.revision)

    async def update_key(self, request: Request, catalog: Catalog) -> Response:
        data = await json_body(request)
        data.pop("revision", None)
        name = request.path_params["name"]
        # What GET answers besides: accepted back unchanged (a round trip), refused if it differs.
        shown = {field: data.pop(field) for field in KEY_READ_ONLY if field in data}
        if shown:
            current = (await run_in_threadpool(catalog.get_key, name)).document()
            for field, value in shown.items():
                if value != current.get(field):
                    raise InvalidInput(field, f"{field}: cannot be changed (a key's scope, policy and "
                                       "rate_limit can)")
        unknown = sorted(set(data) - {"scope", "policy", "name", "rate_limit"})
        if unknown:
            raise InvalidInput(unknown[0], f"{unknown[0]}: unknown field (a key's scope, policy and rate_limit "
                               "can change)")
        if "name" in data and data["name"] != request.path_params["name"]:  # as for every other kind
            raise InvalidInput("name", "name: cannot be changed (delete and create instead)")
        # A null scope or policy was a silent no-op; a null rate_limit means the server's default.
        if "scope" in data and data["scope"] is None:
            raise InvalidInput("scope", 'scope: cannot be removed (give "read" or "admin")')
        if "policy" in data and data["policy"] is None:
            raise InvalidInput("policy", 'policy: cannot be removed (give {"all": true} for every model)')
        rate_limit = _optional_str(data, "rate_limit") if "rate_limit" in data else UNCHANGED
        condition = await if_match(request, lambda: catalog.get_key(name).revision)
        key = await run_in_threadpool(catalog.update_key, name, data.get("scope"), data.get("policy"), condition,
                                      rate_limit)
        return json_response(with_revision(key.document(), key.revision), etag=key.revision)

    async def revoke_key(self, request: Request, catalog: Catalog) -> Response:
        name = request.path_params["name"]
        condition = await if_match(request, lambda: catalog.get_key(name).revision)
        await run_in_threadpool(catalog.revoke_key, name, condition)
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
        since = _int_param(request, "since", 0, 0, MAX_VERSION)
        limit = _int_param(request, "limit", 1000, 1, 10_000)
        page = await run_in_threadpool(catalog.change_page, since, limit)
        return json_response({
            "object": "list",
            "data": [c.document() for c in page.entries],
            "version": page.version,
            "has_more": page.has_more,
        })

    # Parsing, validating, writing and rendering a catalog file all run on a worker thread: on the event
    # loop, a 4.8 MB file of 100,000 models held every other request of the worker for 13 s (measured).

    async def export(self, request: Request, catalog: Catalog) -> Response:
        file_format = request.query_params.get("format", "json")
        if file_format not in ("json", "yaml"):
            raise InvalidInput("format", "format: must be json or yaml")
        if file_format == "yaml":
            text = await run_in_threadpool(lambda: dump_yaml(catalog.export()))
            return Response(text, media_type="application/yaml")
        return raw_json_response(await run_in_threadpool(lambda: orjson.dumps(catalog.export())))

    async def apply(self, request: Request, catalog: Catalog) -> Response:
        body = await read_body(request)
        if not body.strip():  # not taken as an empty file: with ?prune that would delete everything
            raise InvalidInput("file", "file: the request body is empty; send a catalog file ({} for an empty one)")
        prune, dry_run = _flag(request, "prune"), _flag(request, "dry_run")
        expected_plan = request.query_params.get("expected_plan")  # a preview's "plan": apply only that

        def apply() -> bytes:
            version, planned = catalog.apply(parse_catalog_file(body), prune, dry_run, expected_plan)
            return orjson.dumps({"version": version, "dry_run": dry_run, "plan": plan_digest(planned),
                                 "changes": [p.document() for p in planned]})

        return raw_json_response(await run_in_threadpool(apply))

    def table(self) -> RouteTable:
        """Every generic admin route: keys, the change feed, catalog files, and each kind's collection."""
        table: RouteTable = {
            "/v1/admin/changes": {"GET": self.changes},
            "/v1/admin/catalog": {"GET": self.export},
            "/v1/admin/catalog/apply": {"POST": self.apply},
            "/v1/admin/keys": {"GET": self.list_keys, "POST": self.create_key},
            "/v1/admin/keys/{name}/explain": {"GET": self.explain},
            "/v1/admin/keys/{name}": {"GET": self.get_key, "PATCH": self.update_key, "DELETE": self.revoke_key},
        }
        for kind in KINDS:
            base = f"/v1/admin/{kind.collection}"
            table[base] = {"GET": partial(self.list_entities, kind.name),
                           "POST": partial(self.create_entity, kind.name)}
            table[base + "/{key:path}"] = {"GET": partial(self.get_entity, kind.name),
                                           "PATCH": partial(self.update_entity, kind.name),
                                           "DELETE": partial(self.delete_entity, kind.name)}
        return table


def _location(collection: str, key: str) -> str:
    """Where a created entity is read (a 201's `Location`): its id percent-encoded, its `/` kept."""
    return f"/v1/admin/{collection}/" + quote(key, safe="/:@!$&'()*+,;=")


def _optional_str(data: dict[str, Any], field: str) -> str | None:
    value = data.get(field)
    if value is not None and not isinstance(value, str):
        raise InvalidInput(field, f"{field}: must be a string such as \"600/m\", or null")
    return value


def _flag(request: Request, name: str) -> bool:
    """A yes/no query parameter; anything else is refused rather than taken as no."""
    raw = request.query_params.get(name, "").lower()
    if raw in ("1", "true", "yes"):
        return True
    if raw in ("", "0", "false", "no"):
        return False
    raise InvalidInput(name, f"{name}: must be true or false")


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
