"""Admin routes for upstreams beyond the generic ones: reads that include each upstream's health, and
`POST /v1/admin/upstreams/{name}/sync`, which polls it now, in this server, and reports what changed.

Creating, changing and removing upstreams are the generic admin routes (admin.py, one per kind in
`catalog/kinds.py`), with revisions, ETags and If-Match like every other entity.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from modeldex.api.admin_base import RouteTable, json_response
from modeldex.catalog.service import Catalog
from modeldex.catalog.upstreams import Upstream
from modeldex.discovery.health import DiscoveryStore, upstream_reports, with_health
from modeldex.discovery.sync import sync_now
from modeldex.gateway.health import idle_report


def upstream_routes(store: DiscoveryStore, inference_health: Callable[[], dict[str, dict[str, object]]]
                    | None = None) -> RouteTable:
    """`store` holds the upstreams' health beside the catalog; `inference_health` how each has been
    answering inference requests (shown as `health.inference`: all of this server's workers, see
    gateway/health.py). The paths come before the
    generic ones of upstreams (admin.py), whose methods they replace: `sync` before `{key:path}`."""

    def with_inference(document: dict[str, Any], inference: dict[str, dict[str, object]]) -> dict[str, Any]:
        if inference_health is not None:
            document["health"]["inference"] = inference.get(str(document["name"])) or idle_report()
        return document

    async def list_upstreams(request: Request, catalog: Catalog) -> Response:
        def read() -> list[dict[str, object]]:
            inference = inference_health() if inference_health is not None else {}
            return [with_inference(r, inference)
                    for r in upstream_reports(store.all_revisions(Upstream), store, time.time())]

        return json_response({"object": "list", "data": await run_in_threadpool(read)})

    async def get_upstream(request: Request, catalog: Catalog) -> Response:
        name = request.path_params["key"]

        def read() -> tuple[dict[str, object], int]:
            upstream, revision = catalog.get("upstream", name)
            document = with_health(upstream.document(), revision, store.upstream_health(time.time()).get(name))
            return with_inference(document, inference_health() if inference_health is not None else {}), revision

        document, revision = await run_in_threadpool(read)
        return json_response(document, etag=revision)

    async def sync(request: Request, catalog: Catalog) -> Response:
        result = await run_in_threadpool(sync_now, store, request.path_params["name"])
        await run_in_threadpool(catalog.written_elsewhere)
        return json_response(result.document())

    return {
        "/v1/admin/upstreams": {"GET": list_upstreams},
        "/v1/admin/upstreams/{name}/sync": {"POST": sync},
        "/v1/admin/upstreams/{key:path}": {"GET": get_upstream},
    }
