"""Admin routes for upstreams beyond the generic ones: reads that include each upstream's health, and
`POST /v1/admin/upstreams/{name}/sync`, which polls it now, in this server, and reports what changed.

Creating, changing and removing upstreams are the generic admin routes (`COLLECTIONS` in admin.py), with
revisions, ETags and If-Match like every other entity.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modeldex.catalog.service import Catalog
from modeldex.catalog.upstreams import with_health
from modeldex.discovery.sync import sync_now

if TYPE_CHECKING:
    from modeldex.api.admin import AdminRoutes


def upstream_routes(admin: AdminRoutes) -> list[Route]:
    from modeldex.api.admin import json_response

    async def list_upstreams(request: Request, catalog: Catalog) -> Response:
        def read() -> list[dict[str, Any]]:
            health = catalog.store.upstream_health(time.time())
            return [with_health(u.document(), rev, health.get(u.name))  # type: ignore[attr-defined]
                    for u, rev in sorted(catalog.list("upstream"), key=lambda e: e[0].name)]  # type: ignore

        return json_response({"object": "list", "data": await run_in_threadpool(read)})

    async def get_upstream(request: Request, catalog: Catalog) -> Response:
        name = request.path_params["key"]

        def read() -> tuple[dict[str, Any], int]:
            upstream, revision = catalog.get("upstream", name)
            health = catalog.store.upstream_health(time.time()).get(name)
            return with_health(upstream.document(), revision, health), revision

        document, revision = await run_in_threadpool(read)
        return json_response(document, etag=revision)

    async def sync(request: Request, catalog: Catalog) -> Response:
        result = await run_in_threadpool(sync_now, catalog.store, request.path_params["name"])
        return json_response(result.document())

    e = admin.endpoint
    return [
        Route("/v1/admin/upstreams", e(list_upstreams), methods=["GET"]),
        Route("/v1/admin/upstreams/{name}/sync", e(sync, writes=True), methods=["POST"]),
        Route("/v1/admin/upstreams/{key:path}", e(get_upstream), methods=["GET"]),
    ]
