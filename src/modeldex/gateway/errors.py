"""Errors the gateway answers itself, in the OpenAI envelope before anything was sent, or as the last
event of a stream that already started (in the shape of the stream's protocol, so SDKs raise it)."""

from __future__ import annotations

import orjson

Headers = list[tuple[str, str]]
REDACTED = b"[redacted]"


class GatewayError(Exception):
    def __init__(self, status: int, message: str, code: str, type: str = "server_error",
                 param: str | None = None, headers: Headers | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.type = type
        self.param = param
        self.headers = headers or []

    def body(self) -> bytes:
        return orjson.dumps({"error": {"message": self.message, "type": self.type, "param": self.param,
                                       "code": self.code}})


def unreachable(upstream: str, reason: str) -> GatewayError:
    return GatewayError(502, f"The upstream `{upstream}` could not be reached: {reason}.", "upstream_unreachable")


def timed_out(upstream: str, phase: str) -> GatewayError:
    return GatewayError(504, f"The upstream `{upstream}` did not answer in time ({phase}).", "upstream_timeout")


def bad_answer(upstream: str, reason: str) -> GatewayError:
    return GatewayError(502, f"The upstream `{upstream}` answered in a way that cannot be passed on: {reason}.",
                        "upstream_error")


def upstream_refused(upstream: str, status: int) -> GatewayError:
    return GatewayError(502, f"The upstream `{upstream}` refused modeldex's credentials (HTTP {status}): an "
                        "operator should check the key in its api_key_env variable.", "upstream_auth_failed")


def stream_error_event(protocol: str, message: str, code: str) -> bytes:
    """The event that ends a stream cut short: OpenAI's SDK raises on a `data:` object with `error`,
    Anthropic's on an `error` event."""
    if protocol == "anthropic":
        data = orjson.dumps({"type": "error", "error": {"type": "api_error", "message": message}})
        return b"event: error\ndata: " + data + b"\n\n"
    data = orjson.dumps({"error": {"message": message, "type": "server_error", "param": None, "code": code}})
    return b"data: " + data + b"\n\n"


def redact(body: bytes, secret: str | None) -> bytes:
    """`body` with every copy of the upstream's key blanked out (upstreams that echo credentials back)."""
    if not secret or len(secret) < 4:
        return body
    return body.replace(secret.encode(), REDACTED)
