"""The client's side of a forwarded request, over granian's RSGI protocol or ASGI (in-process tests):
read the body, answer in one piece or as a stream, and notice when the client goes away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any, Protocol

Headers = list[tuple[str, str]]


class ClientGone(Exception):
    """The client closed its connection: nothing more can reach it."""


class BodyRefused(Exception):
    """The request body was not taken whole: too large, cut short or stalled (the subclasses)."""


class BodyTooLarge(BodyRefused):
    pass


class BodyIncomplete(BodyRefused):
    """The body ended before its Content-Length: the client stopped sending."""

    def __init__(self, declared: int) -> None:
        super().__init__(declared)
        self.declared = declared


ONE_CALL_BODY = 64 * 1024  # bytes of a body with a Content-Length read in one call (RsgiDownstream)


class BodyTimeout(BodyRefused):
    """No part of the body arrived for the idle timeout: a stalled upload, or one sent slowly on purpose to
    hold a connection (slowloris), which granian, with a timeout for the headers only, lets wait forever."""


def declared_length(content_length: str | None) -> int | None:
    """The body's length as its Content-Length header gives it, or None (no header, or not a number)."""
    if content_length is None or not (content_length.isascii() and content_length.isdigit()):
        return None
    return int(content_length)


async def read_chunks(chunks: AsyncIterable[bytes], limit: int, expected: int | None, idle_timeout: float) -> bytes:
    """A request body from its chunks, for every reader (the gateway, the admin API, the console's forms):
    BodyTooLarge past `limit` bytes (at once when its Content-Length, `expected`, says so, else before all of
    it is read), BodyIncomplete when it ends before its Content-Length (granian ends a body the client stopped
    sending without an error), BodyTimeout when `idle_timeout` seconds pass with no chunk arriving (nginx's
    client_body_timeout: a slow but steady upload goes on)."""
    if expected is not None and expected > limit:
        raise BodyTooLarge
    parts, size = [], 0
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(idle_timeout) as idle:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge
                parts.append(chunk)
                if size == expected:  # all there: waiting for granian's end of body cost ~100 µs of CPU a
                    # request (medians of four runs of bench/gateway.py each way; runs vary by ~100 µs)
                    break
                idle.reschedule(loop.time() + idle_timeout)
    except TimeoutError:
        raise BodyTimeout from None
    if expected is not None and size != expected:
        raise BodyIncomplete(expected)
    return b"".join(parts)


class Downstream(Protocol):
    async def body(self, limit: int, idle_timeout: float) -> bytes:
        """The request body (`read_chunks`): BodyTooLarge, BodyIncomplete or BodyTimeout when it is not."""
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

    async def body(self, limit: int, idle_timeout: float) -> bytes:
        declared = declared_length(self._declared)
        try:
            if declared is not None and declared <= min(limit, ONE_CALL_BODY):
                # A small body, its length known, in one call (as a chat request's is): 20-40 µs of CPU a request
                # less than in chunks (bench/gateway.py); at any useful speed it comes within the timeout.
                try:
                    async with asyncio.timeout(idle_timeout):
                        body: bytes = await self._protocol()
                        return body
                except TimeoutError:
                    raise BodyTimeout from None
            # In chunks, so that a stalled body is noticed between them.
            return await read_chunks(self._protocol, limit, declared, idle_timeout)
        except RuntimeError as exc:  # granian's ProtocolClosed: the client stopped before the end
            if declared is None:
                raise
            raise BodyIncomplete(declared) from exc

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

    async def body(self, limit: int, idle_timeout: float) -> bytes:
        return await read_chunks(self._chunks(), limit, None, idle_timeout)

    async def _chunks(self) -> AsyncIterator[bytes]:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self._disconnected.set()
                raise ClientGone
            yield message.get("body", b"")
            if not message.get("more_body", False):
                return

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
