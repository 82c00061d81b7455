"""An upstream as fast as this machine allows, for bench/gateway.py: a raw asyncio protocol on uvloop that
answers every POST with a canned chat completion, or, when the body asks for a stream, 50 events, each
stamped with the time it was written (so the client can tell how late it arrived).

    python bench/instant_upstream.py PORT
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import uvloop

EVENTS = 50
BODY = json.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(BODY)
STREAM_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Instant(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport  # uvloop's, which is no asyncio.Transport subclass
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            if len(rest) < length:
                return
            body, self.buffer = rest[:length], rest[length:]
            if b'"stream":true' in body.replace(b" ", b""):
                self.transport.write(STREAM_HEAD)
                for index in range(EVENTS):
                    event = {"i": index, "sent": time.time(), "choices": [{"index": 0, "delta": {"content": "x"}}]}
                    self.transport.write(chunked(b"data: " + json.dumps(event).encode() + b"\n\n"))
                self.transport.write(chunked(b"data: [DONE]\n\n") + b"0\r\n\r\n")
            else:
                self.transport.write(HEAD + BODY)


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Instant, "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
