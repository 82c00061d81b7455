"""The inference routes' front half: who calls, within which limits, and whether they may call the model
they name; then the gateway (`modeldex.gateway`) forwards the request.

The caller is found exactly as on the Models routes (`Callers`), so keys, 401/429 and per-key limits are
the same; a model the caller's policy hides is the same 404 `model_not_found` as on retrieve, answered
before any upstream is contacted. Anthropic's clients send their key as `x-api-key`: taken as a bearer
token on the Anthropic routes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from modeldex.api import errors
from modeldex.api.callers import Callers
from modeldex.api.errors import ApiError
from modeldex.api.render import RenderedCatalog
from modeldex.catalog.live import LiveCatalog
from modeldex.catalog.seed import builtin_routes
from modeldex.gateway.downstream import BodyRefused, ClientGone, Downstream
from modeldex.gateway.endpoints import ENDPOINTS, Endpoint
from modeldex.gateway.errors import anthropic_error_body
from modeldex.gateway.forward import Call, Forwarder, Outcome
from modeldex.gateway.request import BadRequest, DecodedTooLarge, UnsupportedEncoding, decoded_body, parse_json, parse_multipart
from modeldex.gateway.routing import NoRoute, RoutingTable
from modeldex.ops import metrics

Headers = list[tuple[str, str]]
JSON = ("content-type", "application/json")


@dataclass(slots=True)
class Served:
    """What the access log and metrics need of an inference request."""

    status: int
    caller: str | None
    model: str | None
    outcome: Outcome | None


class InferenceRoutes:
    def __init__(self, live: LiveCatalog[RenderedCatalog], callers: Callers, forwarder: Forwarder,
                 max_body_bytes: int, body_timeout: float) -> None:
        self.live = live
        self.callers = callers
        self.forwarder = forwarder
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self._table: tuple[RenderedCatalog, RoutingTable] | None = None

    @staticmethod
    def route(path: str) -> Endpoint | None:
        return ENDPOINTS.get(path)

    def table(self, rendered: RenderedCatalog) -> RoutingTable:
        """The routing table of the served catalog version, made on first use after it changed."""
        current = self._table
        if current is None or current[0] is not rendered:
            builtin_upstreams, builtin_models = builtin_routes()
            current = self._table = (rendered, RoutingTable(rendered.models, rendered.aliases, rendered.upstreams,
                                                            builtin_upstreams, builtin_models))
        return current[1]

    async def serve(self, endpoint: Endpoint, method: str, headers: Headers, authorization: str | None,
                    client: str, request_id: str, started: float, downstream: Downstream,
                    answer_headers: Headers) -> Served:
        served = Served(500, None, None, None)
        limit_headers: Headers = []
        try:
            rendered = self.live.current
            caller = await self.callers.caller(rendered.keys, authorization, client)
            served.caller = caller.name
            if self.callers.limited(caller):
                limit_headers = await self.callers.charge(caller)
            try:
                body = await downstream.body(self.max_body_bytes, self.body_timeout)
            except BodyRefused as refusal:
                raise errors.body_refused(refusal, self.max_body_bytes, self.body_timeout) from None
            content_type = next((v for n, v in headers if n == "content-type"), None)
            content_encoding = next((v for n, v in headers if n == "content-encoding"), None)
            try:
                if content_encoding is not None:
                    body = decoded_body(body, content_encoding, self.max_body_bytes)
                parsed = parse_multipart(body, content_type) if endpoint.multipart else parse_json(body)
            except DecodedTooLarge:
                raise errors.body_too_large(self.max_body_bytes) from None
            except UnsupportedEncoding as exc:
                raise ApiError(415, exc.message, code="unsupported_content_encoding") from None
            except BadRequest as exc:
                raise ApiError(400, exc.message, param=exc.param,
                               code="missing_model" if exc.param == "model" else "invalid_body") from None
            served.model = parsed.model
            if parsed.model not in rendered.view(caller.policy).bodies:
                raise errors.model_not_found(parsed.model)
            try:
                targets = self.table(rendered).targets(parsed.model, endpoint.protocol)
            except NoRoute as exc:
                raise ApiError(503, exc.message, type="server_error", param="model", code=exc.code) from None
            call = Call(endpoint, parsed, targets, headers, request_id, started, [*limit_headers, *answer_headers])
            outcome = await self.forwarder.forward(call, downstream)
            served.status, served.outcome = outcome.status, outcome
        except ApiError as error:
            served.status = error.status
            body = (anthropic_error_body(error.status, error.message, error.code, request_id)
                    if endpoint.protocol == "anthropic" else error.body())  # each protocol's clients parse their own
            await downstream.answer(error.status, [JSON, ("x-request-id", request_id), *error.headers,
                                                   *limit_headers, *answer_headers], body)
        except ClientGone:
            served.status = 499
        metrics.gateway_request(endpoint.label, served.model, served.outcome, served.status,
                                time.perf_counter() - started)
        return served
