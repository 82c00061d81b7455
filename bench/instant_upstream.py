"""An upstream as fast as this machine allows, for bench/gateway.py and the gateway scenarios of run.py: a
raw asyncio protocol on uvloop that answers every POST with a canned chat completion, or, when the body
asks for a stream, 50 chat completion chunks, each stamped with the time it was written (`sent`, so the
client can tell how late it arrived).

    python bench/instant_upstream.py PORT [DRIP_MS]

With DRIP_MS the events of a stream are written that many milliseconds apart (a timed drip: each event
travels alone, as a model's tokens do), else all at once.
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


def event(index: int) -> bytes:
    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m", "i": index,
             "sent": time.time(), "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}]}
    return chunked(b"data: " + json.dumps(chunk).encode() + b"\n\n")


DONE = chunked(b"data: [DONE]\n\n") + b"0\r\n\r\n"
DRIP_S = 0.0  # set from the command line


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
                if DRIP_S:
                    self.drip(0)
                    continue
                for index in range(EVENTS):
                    self.transport.write(event(index))
                self.transport.write(DONE)
            else:
                self.transport.write(HEAD + BODY)

    def drip(self, index: int) -> None:
        if self.transport.is_closing():
            return
        if index == EVENTS:
            self.transport.write(DONE)
            return
        self.transport.write(event(index))
        asyncio.get_running_loop().call_later(DRIP_S, self.drip, index + 1)


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Instant, "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    DRIP_S = float(sys.argv[2]) / 1000 if len(sys.argv) > 2 else 0.0
    uvloop.run(serve(int(sys.argv[1])))
