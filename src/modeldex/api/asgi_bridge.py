"""An ASGI app (the Starlette side app: admin API, health, metrics, OpenAPI) served inside one RSGI request.

The server speaks RSGI because it answers a request in one call (`response_bytes`), with no event-loop
round trips per message; that is where the Models hot path gets its speed. The rest of the API is
Starlette, which speaks ASGI: this module translates one request and its response between the two.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[MutableMapping[str, Any]]],
                    Callable[[MutableMapping[str, Any]], Awaitable[None]]], Awaitable[None]]


def asgi_scope(scope: Any, path: str, client: str, extra: dict[str, Any]) -> dict[str, Any]:
    """The ASGI scope of an RSGI request: same method, path (already decoded by granian), headers."""
    server_host, _, server_port = scope.server.rpartition(":")
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": scope.http_version,
        "method": scope.method,
        "scheme": scope.scheme,
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        # granian hands the query over decoded as UTF-8: encoded back the same way, or U+0080-U+00FF
        # would become bytes that are not UTF-8, which Starlette cannot decode (a 500 on every 404).
        "query_string": scope.query_string.encode("utf-8", "replace"),
        "root_path": "",
        "headers": [(name.encode("latin-1"), value.encode("latin-1", "replace"))
                    for name, value in scope.headers.items()],
        "client": (client, 0),
        "server": (server_host.strip("[]"), int(server_port) if server_port.isdigit() else 0),
        "state": {},
        **extra,
    }


class Exchange:
    """One request's receive and send, over granian's RSGI protocol object."""

    def __init__(self, protocol: Any, request_id: str, extra_headers: list[tuple[str, str]]) -> None:
        self._protocol = protocol
        self._request_id = request_id
        self._extra_headers = extra_headers  # the app's own (CORS), added to whatever the ASGI app answers
        self._chunks = protocol.__aiter__()
        self._body_done = False
        self._stream: Any = None
        self._headers: list[tuple[str, str]] = []
        self.status: int | None = None  # set once the response started
        self.finished = False

    async def receive(self) -> Message:
        if self._body_done:
            await self._protocol.client_disconnect()
            return {"type": "http.disconnect"}
        try:
            chunk = await self._chunks.__anext__()
        except StopAsyncIteration:
            self._body_done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            # granian replaces content-length with the body's own, but for HEAD, whose body it drops.
            self._headers = [(name.decode("latin-1"), value.decode("latin-1"))
                             for name, value in message.get("headers", ())]
            if not any(name == "x-request-id" for name, _ in self._headers):
                self._headers.append(("x-request-id", self._request_id))
            self._headers.extend(self._extra_headers)
        elif message["type"] == "http.response.body" and self.status is not None and not self.finished:
            body: bytes = message.get("body", b"")
            more = message.get("more_body", False)
            if self._stream is None and not more:
                self._protocol.response_bytes(self.status, self._headers, body)
                self.finished = True
                return
            if self._stream is None:
                self._stream = self._protocol.response_stream(self.status, self._headers)
            if body:
                await self._stream.send_bytes(body)
            self.finished = not more


async def serve_asgi(app: ASGIApp, scope: dict[str, Any], protocol: Any, request_id: str,
                     extra_headers: list[tuple[str, str]]) -> Exchange:
    """Run the ASGI app for this request; the returned exchange tells whether and how it answered."""
    exchange = Exchange(protocol, request_id, extra_headers)
    await app(scope, exchange.receive, exchange.send)
    return exchange
