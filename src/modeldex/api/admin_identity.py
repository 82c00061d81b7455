"""`POST /v1/admin/auth/explain`: whether a token from an identity provider would be accepted, as whom,
with which scope and policy, or why not (what `modeldex auth explain` shows). Issuers themselves are the
generic admin routes of their kind (`/v1/admin/issuers`)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from modeldex.api.admin_base import RouteTable, json_body, json_response
from modeldex.catalog.errors import InvalidInput
from modeldex.catalog.service import Catalog
from modeldex.identity.credentials import IssuerTokens


def identity_routes(tokens: IssuerTokens) -> RouteTable:
    async def explain(request: Request, catalog: Catalog) -> Response:
        data = await json_body(request)
        token = data.get("token")
        if not isinstance(token, str) or not token:
            raise InvalidInput("token", "token: required, the bearer token to explain")
        # The server's own key sets and issuers: what a request with this token would meet.
        return json_response(await run_in_threadpool(tokens.explain, token))

    return {"/v1/admin/auth/explain": {"POST": explain}}
