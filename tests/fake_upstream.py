"""A deliberately misbehaving OpenAI-compatible upstream, on 127.0.0.1, for discovery and gateway tests.

`mode` picks the answer to `GET /v1/models`: a good model list, or HTML, 10 MB, a 30 s stall, a slow
drip, ids with control characters, an error that echoes the caller's key, ... It counts requests and
the most that were ever in flight at once, so tests can tell how many pollers asked.

`chat_mode` picks the answer to every POST (chat completions, embeddings, messages, ...): a completion
naming the model it was asked for, a stream of `events` events `drip` seconds apart, a stall, a stream
closed mid-event, a 5xx, a 429 with retry-after, 10 MB (or 10 MB declared and 1 MB sent), a redirect, an
error that echoes the key. Each POST is kept
(`posts`: path, headers, body), and a client that goes away is noticed (`disconnects`) within 20 ms.
"""

from __future__ import annotations

import base64
import json
import threading
import time
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
        self.chat_mode = "ok"
        self.events = 5
        self.drip = 0.0  # seconds between streamed events
        self.retry_after = "1"
        self.posts: list[tuple[str, dict[str, str], bytes]] = []
        self.disconnects = 0
        self.disconnected = threading.Event()
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

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                with fake._lock:
                    fake.posts.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                try:
                    fake._chat(self, body)
                except (BrokenPipeError, ConnectionResetError):
                    fake._gone()

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


    def _gone(self) -> None:
        with self._lock:
            self.disconnects += 1
        self.disconnected.set()

    def _wait(self, h: Any, seconds: float) -> bool:
        """Wait `seconds`, watching the connection: False (and counted) as soon as the client closes it."""
        import select
        import socket

        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            readable, _, _ = select.select([h.connection], [], [], max(0.0, min(0.02, left)))
            if readable:
                try:
                    if h.connection.recv(1, socket.MSG_PEEK) == b"":
                        self._gone()
                        return False
                except OSError:
                    self._gone()
                    return False
            if left <= 0 or self._closing.is_set():
                return not self._closing.is_set()

    def _chat(self, h: Any, body: bytes) -> None:
        mode = self.chat_mode
        request = json.loads(body) if body[:1] == b"{" else {}
        model = request.get("model", "?")
        key = h.headers.get("authorization") or h.headers.get("x-api-key")
        if mode == "ok" and request.get("stream"):
            mode = "stream"
        if h.path.endswith("/messages") and request.get("stream") and mode in ("stream", "stall-mid-stream"):
            self._anthropic_stream(h, model, stall=mode == "stall-mid-stream")
            return
        if mode == "ok":
            if self.drip and not self._wait(h, self.drip):
                return
            h._send(200, json.dumps(_completion(model, h.path)).encode(),
                    headers={"x-ratelimit-remaining-requests": "99", "openai-processing-ms": "7",
                             "x-internal-secret": "not for clients", "set-cookie": "session=upstream-only"})
        elif mode in ("stream", "close-mid-stream", "close-between-events", "stall-mid-stream"):
            h.send_response(200)
            h.send_header("content-type", "text/event-stream")
            h.send_header("transfer-encoding", "chunked")
            h.end_headers()
            for index in range(self.events):
                if index and not self._wait(h, self.drip):
                    return
                if mode == "close-mid-stream" and index == 2:
                    h.wfile.write(b"%x\r\n%s\r\n" % (10, b'data: {"ch'))
                    h.wfile.flush()
                    h.close_connection = True
                    h.connection.shutdown(2)
                    return
                if mode == "close-between-events" and index == 2:  # whole events, then no end of the body
                    h.close_connection = True
                    h.connection.shutdown(2)
                    return
                if mode == "stall-mid-stream" and index == 2:
                    self._wait(h, 30)
                    return
                event = b"data: " + json.dumps(_chunk(model, index)).encode() + b"\n\n"
                h.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                h.wfile.flush()
            if request.get("stream_options", {}).get("include_usage"):
                event = b"data: " + json.dumps({**_chunk(model, self.events), "choices": [],
                                                "usage": {"prompt_tokens": 3, "completion_tokens": self.events,
                                                          "total_tokens": 3 + self.events}}).encode() + b"\n\n"
                h.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            done = b"data: [DONE]\n\n"
            h.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
            h.wfile.flush()
        elif mode == "stall":  # nothing at all, until the client goes (or 30 s)
            self._wait(h, 30)
        elif mode == "5xx":
            h._send(502, b'{"error":{"message":"bad gateway upstream","type":"server_error"}}')
        elif mode == "429":
            h._send(429, b'{"error":{"message":"slow down","type":"rate_limit"}}',
                    headers={"retry-after": self.retry_after, "x-ratelimit-remaining-requests": "0"})
        elif mode == "huge-error":  # an error page far larger than any error message
            h._send(500, b"<html>" + b"x" * (2 * 1024 * 1024) + b"</html>", "text/html")
        elif mode == "html-error":  # a proxy's page in front of the upstream, asking to come back later
            h._send(503, b"<html><body><h1>503 Service Unavailable</h1>nginx</body></html>", "text/html",
                    headers={"retry-after": "3"})
        elif mode == "traceback-500":  # a framework's plain-text error page
            h._send(500, b'Internal Server Error\nTraceback (most recent call last):\n  File "app.py"', "text/plain")
        elif mode in ("chunked", "chunked-cut"):  # a completion without a length; cut: the connection closes midway
            document = json.dumps(_completion(model, h.path)).encode()
            h.send_response(200)
            h.send_header("content-type", "application/json")
            h.send_header("transfer-encoding", "chunked")
            h.end_headers()
            half = len(document) // 2
            for part in (document[:half], document[half:]):
                h.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                h.wfile.flush()
                if mode == "chunked-cut":
                    h.close_connection = True
                    h.connection.shutdown(2)
                    return
            h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()
        elif mode == "not-json":  # a 200 that says it is JSON and is not
            h._send(200, b'{"id": "chatcmpl-1", "object": "chat.compl')
        elif mode == "huge":
            h._send(200, json.dumps({**_completion(model, h.path), "padding": "x" * TEN_MB}).encode())
        elif mode == "huge-cut":  # 10 MB declared (past what is read whole), 1 MB sent, then the connection closes
            h.send_response(200)
            h.send_header("content-type", "application/json")
            h.send_header("content-length", str(TEN_MB))
            h.end_headers()
            h.wfile.write(b'{"object": "list", "data": [' + b" " * (1024 * 1024))
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(2)
        elif mode == "redirect":  # to another host: following it would send the upstream's key there
            h._send(307, b"", headers={"location": "http://127.0.0.1:9/v1/chat/completions"})
        elif mode == "echo-key":  # a bad request whose message repeats the credentials it came with
            h._send(400, json.dumps({"error": {"message": f"bad request from {key}", "type": "invalid"}}).encode())
        elif mode == "unauthorized":
            h._send(401, json.dumps({"error": {"message": f"invalid key {key}", "type": "auth"}}).encode())
        else:
            raise AssertionError(f"unknown chat mode {mode}")


    def _anthropic_stream(self, h: Any, model: str, stall: bool) -> None:
        """Anthropic's event stream: message_start, a text block of `events` deltas, message_stop."""
        h.send_response(200)
        h.send_header("content-type", "text/event-stream")
        h.send_header("transfer-encoding", "chunked")
        h.end_headers()

        def send(name: str, data: dict[str, Any]) -> None:
            event = f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()
            h.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            h.wfile.flush()

        send("message_start", {"message": {"id": "msg_1", "type": "message", "role": "assistant", "model": model,
                                           "content": [], "stop_reason": None, "stop_sequence": None,
                                           "usage": {"input_tokens": 4, "output_tokens": 0}}})
        send("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
        for index in range(self.events):
            if stall and index == 2:
                self._wait(h, 30)
                return
            send("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": f"t{index} "}})
        send("content_block_stop", {"index": 0})
        send("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                               "usage": {"output_tokens": self.events}})
        send("message_stop", {})
        h.wfile.write(b"0\r\n\r\n")


def _completion(model: str, path: str) -> dict[str, Any]:
    if path.endswith("/embeddings"):
        return {"object": "list", "model": model, "data": [{"object": "embedding", "index": 0,
                                                            "embedding": [0.1, 0.2, 0.3]}],
                "usage": {"prompt_tokens": 2, "total_tokens": 2}}
    if path.endswith("/messages"):
        return {"id": "msg_1", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": "hello from fake"}], "stop_reason": "end_turn",
                "stop_sequence": None, "usage": {"input_tokens": 4, "output_tokens": 3}}
    if "/audio/" in path:
        return {"text": f"transcribed by {model}"}
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello from fake"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}


def _chunk(model: str, index: int) -> dict[str, Any]:
    return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": model,
            "choices": [{"index": 0, "delta": {"content": f"t{index} "}, "finish_reason": None}]}


def _huge_list() -> bytes:
    entry = b'{"id":"m-%08d","object":"model","owned_by":"x"},'
    count = TEN_MB // (len(entry) + 2) + 1
    return b'{"object":"list","data":[' + b"".join(entry % i for i in range(count))[:-1] + b"]}"

