"""Admin routes for inference routes: `GET /v1/admin/routes` (every model's routes, discovered models'
implicit ones too), `POST /v1/admin/routes` ({model, upstream, upstream_model?, weight?}) and
`DELETE /v1/admin/routes?model=M&upstream=U[&upstream_model=ID]`.

A route is part of its model (`routes` on the model, which the generic model routes also take whole):
these add or remove one without rewriting the others.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from modeldex.api.admin_base import RouteTable, json_body, json_response, with_revision
from modeldex.api.errors import ApiError
from modeldex.catalog.service import Catalog


def _string(data: dict[str, Any], field: str, required: bool = True) -> str | None:
    value = data.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"{field}: must be a non-empty string", param=field, code="invalid_value")
    return value


def route_table() -> RouteTable:
    async def list_routes(request: Request, catalog: Catalog) -> Response:
        return json_response({"object": "list", "data": await run_in_threadpool(catalog.routes)})

    async def add_route(request: Request, catalog: Catalog) -> Response:
        data = await json_body(request)
        unknown = sorted(set(data) - {"model", "upstream", "upstream_model", "weight"})
        if unknown:  # as every admin body: a misspelt `upstream_model` must not route to the catalog id
            raise ApiError(400, f"{unknown[0]}: unknown field", param=unknown[0], code="invalid_value")
        weight = data.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, int):
            raise ApiError(400, "weight: must be a whole number from 1", param="weight", code="invalid_value")
        model, upstream = _string(data, "model"), _string(data, "upstream")
        assert model is not None and upstream is not None
        entity, revision = await run_in_threadpool(catalog.add_route, model, upstream,
                                                   _string(data, "upstream_model", required=False), weight)
        return json_response(with_revision(entity.document(), revision), status=201, etag=revision)

    async def remove_route(request: Request, catalog: Catalog) -> Response:
        params = dict(request.query_params)
        model, upstream = _string(params, "model"), _string(params, "upstream")
        assert model is not None and upstream is not None
        entity, revision = await run_in_threadpool(catalog.remove_route, model, upstream,
                                                   _string(params, "upstream_model", required=False))
        return json_response(with_revision(entity.document(), revision), etag=revision)

    return {"/v1/admin/routes": {"GET": list_routes, "POST": add_route, "DELETE": remove_route}}
