"""A deliberately misbehaving OpenAI-compatible upstream, on 127.0.0.1, for discovery tests.

`mode` picks the answer to `GET /v1/models`: a good model list, or HTML, 10 MB, a 30 s stall, a slow
drip, ids with control characters, an error that echoes the caller's key, ... It counts requests and
the most that were ever in flight at once, so tests can tell how many pollers asked.
"""

from __future__ import annotations

import base64
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TEN_MB = 10 * 1024 * 1024


class FakeUpstream:
    def __init__(self, models: list[dict[str, Any]] | None = None) -> None:
        self.models = models if models is not None else [{"id": "fake-a", "object": "model", "owned_by": "fake"}]
        self.mode = "ok"
        self.delay = 0.0  # seconds before a good answer
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.authorizations: list[str | None] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        # close() waits for the serving loop to notice: let it look every 20 ms, not every 0.5 s (the default).
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closing.set()
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                with fake._lock:
                    fake.requests += 1
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                    fake.authorizations.append(self.headers.get("authorization"))
                try:
                    if self.path.rstrip("/") != "/v1/models":
                        self._send(404, b'{"error":{"message":"no such route"}}')
                    else:
                        fake._answer(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with fake._lock:
                        fake.in_flight -= 1

            def _send(self, status: int, body: bytes, content_type: str = "application/json",
                      headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def _answer(self, h: Any) -> None:
        mode = self.mode
        if mode == "ok":
            if self.delay:
                self._closing.wait(self.delay)
            h._send(200, json.dumps({"object": "list", "data": self.models}).encode())
        elif mode == "html":
            h._send(200, b"<!DOCTYPE html><html><body><h1>Welcome to nginx!</h1></body></html>", "text/html")
        elif mode == "huge":  # 10 MB of valid-looking JSON, with its length declared
            h._send(200, _huge_list())
        elif mode == "huge-chunked":  # the same, streamed without a length: only counting can stop it
            h.send_response(200)
            h.send_header("content-type", "application/json")
            h.send_header("transfer-encoding", "chunked")
            h.end_headers()
            body = _huge_list()
            for start in range(0, len(body), 64 * 1024):
                piece = body[start:start + 64 * 1024]
                h.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            h.wfile.write(b"0\r\n\r\n")
        elif mode == "stall":  # nothing at all for 30 s
            self._closing.wait(30)
        elif mode == "drip":  # headers at once, then a byte every 0.2 s, for 30 s
            h.send_response(200)
            h.send_header("content-type", "application/json")
            h.send_header("content-length", "1000")
            h.end_headers()
            for _ in range(150):
                if self._closing.wait(0.2):
                    return
                h.wfile.write(b" ")
                h.wfile.flush()
        elif mode == "control":  # ids with control characters (an escape sequence, a NUL)
            data = [*self.models, {"id": "evil\x1b[31mred", "object": "model"}, {"id": "nul\x00id", "object": "model"}]
            h._send(200, json.dumps({"object": "list", "data": data}).encode())
        elif mode == "not-a-list":
            h._send(200, json.dumps({"object": "list", "models": [m["id"] for m in self.models]}).encode())
        elif mode == "echo-key":  # a hostile error that repeats the caller's credentials back
            message = f"invalid key {h.headers.get('authorization')}"
            h._send(401, json.dumps({"error": {"message": message, "type": "auth"}}).encode())
        elif mode == "echo-key-plain":  # the same, as the start of a 200 that is not JSON
            h._send(200, f"rejected: {h.headers.get('authorization')} is not welcome here".encode(), "text/plain")
        elif mode == "echo-key-encoded":  # the credentials URL-encoded and in base64, as some proxies log them
            auth = h.headers.get("authorization") or ""
            token = auth.removeprefix("Bearer ")
            message = (f"denied: {urllib.parse.quote(token, safe='')} / {base64.b64encode(auth.encode()).decode()} "
                       f"/ {base64.b64encode(('user:' + token).encode()).decode()}")
            h._send(403, json.dumps({"error": {"message": message}}).encode())
        elif mode == "unavailable":
            h._send(503, b'{"error":{"message":"overloaded"}}')
        elif mode == "redirect":
            h._send(302, b"", headers={"location": "http://127.0.0.1:9/v1/models"})
        else:
            raise AssertionError(f"unknown mode {mode}")


def _huge_list() -> bytes:
    entry = b'{"id":"m-%08d","object":"model","owned_by":"x"},'
    count = TEN_MB // (len(entry) + 2) + 1
    return b'{"object":"list","data":[' + b"".join(entry % i for i in range(count))[:-1] + b"]}"

