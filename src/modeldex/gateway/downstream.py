"""The client's side of a forwarded request, over granian's RSGI protocol or ASGI (in-process tests):
read the body, answer in one piece or as a stream, and notice when the client goes away."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

Headers = list[tuple[str, str]]


class ClientGone(Exception):
    """The client closed its connection: nothing more can reach it."""


class BodyTooLarge(Exception):
    pass


class BodyIncomplete(Exception):
    """The body ended before its Content-Length: the client stopped sending."""

    def __init__(self, declared: int) -> None:
        super().__init__(declared)
        self.declared = declared


class Downstream(Protocol):
    async def body(self, limit: int) -> bytes:
        """The request body; BodyTooLarge past `limit` bytes (refused before all of it is read), BodyIncomplete
        when it ends before its Content-Length."""
        ...

    async def answer(self, status: int, headers: Headers, body: bytes) -> None: ...

    async def start(self, status: int, headers: Headers) -> None:
        """Begin a streamed answer."""
        ...

    async def send(self, chunk: bytes) -> None:
        """Part of a streamed answer, sent on at once; ClientGone when the client left."""
        ...

    async def finish(self) -> None: ...

    async def gone(self) -> None:
        """Returns when the client disconnects (call once the body was read)."""
        ...


class RsgiDownstream:
    def __init__(self, protocol: Any, declared_length: str | None) -> None:
        self._protocol = protocol
        self._declared = declared_length
        self._stream: Any = None

    async def body(self, limit: int) -> bytes:
        if self._declared is not None and self._declared.isdigit():
            if int(self._declared) > limit:
                raise BodyTooLarge
            try:
                body: bytes = await self._protocol()  # its length is known and allowed: in one call
            except Exception as exc:  # granian's ProtocolClosed: the client stopped before the end
                raise BodyIncomplete(int(self._declared)) from exc
            return body
        chunks, size = [], 0
        async for chunk in self._protocol:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    async def answer(self, status: int, headers: Headers, body: bytes) -> None:
        self._protocol.response_bytes(status, headers, body)

    async def start(self, status: int, headers: Headers) -> None:
        self._stream = self._protocol.response_stream(status, headers)

    async def send(self, chunk: bytes) -> None:
        try:
            await self._stream.send_bytes(chunk)
        except Exception as exc:  # granian's ProtocolClosed: the client is gone
            raise ClientGone from exc

    async def finish(self) -> None:
        # granian ends the stream when its transport is freed, which is normally when the handler returns.
        # An upstream that broke off leaves its exception, with our frames in its traceback, in a reference
        # cycle that kept the transport, and the client waiting, until a garbage collection (5-35 s, seen).
        self._stream = None

    async def gone(self) -> None:
        await self._protocol.client_disconnect()


Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class AsgiDownstream:
    def __init__(self, receive: Receive, send: Send, head_only: bool = False) -> None:
        self._receive = receive
        self._send = send
        self._disconnected = asyncio.Event()

    async def body(self, limit: int) -> bytes:
        chunks, size = [], 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self._disconnected.set()
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def answer(self, status: int, headers: Headers, body: bytes) -> None:
        await self.start(status, headers)
        await self._send({"type": "http.response.body", "body": body})

    async def start(self, status: int, headers: Headers) -> None:
        await self._send({"type": "http.response.start", "status": status,
                          "headers": [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]})

    async def send(self, chunk: bytes) -> None:
        if self._disconnected.is_set():
            raise ClientGone
        try:
            await self._send({"type": "http.response.body", "body": chunk, "more_body": True})
        except OSError as exc:
            raise ClientGone from exc

    async def finish(self) -> None:
        await self._send({"type": "http.response.body", "body": b""})

    async def gone(self) -> None:
        while not self._disconnected.is_set():
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self._disconnected.set()
