"""Errors the gateway answers itself, in the envelope of the route's protocol (OpenAI's, or Anthropic's on
`/v1/messages`) before anything was sent, or as the last event of a stream that already started (in the
shape of the stream's protocol, so SDKs raise it)."""

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

    def body(self, protocol: str = "openai", request_id: str | None = None) -> bytes:
        if protocol == "anthropic":
            return anthropic_error_body(self.status, self.message, self.code, request_id)
        return orjson.dumps({"error": {"message": self.message, "type": self.type, "param": self.param,
                                       "code": self.code}})


# Anthropic's error types by status (https://docs.anthropic.com/en/api/errors); its SDK picks the error
# class by status alone, the type tells a client which kind it is.
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 504: "timeout_error"}


def anthropic_error_body(status: int, message: str, code: str | None, request_id: str | None) -> bytes:
    """`{"type": "error", "error": {"type", "message"}}`, Anthropic's error envelope, which its clients parse
    (Claude Code shows `error.message`); modeldex's own code goes in `error.details.error_code`, where
    Anthropic puts its stable codes and its SDK reads them (`APIStatusError.error_code`)."""
    error: dict[str, object] = {"type": _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500
                                                              else "invalid_request_error"), "message": message}
    if code:
        error["details"] = {"error_code": code}
    document: dict[str, object] = {"type": "error", "error": error}
    if request_id:
        document["request_id"] = request_id
    return orjson.dumps(document)


def unreachable(upstream: str, reason: str) -> GatewayError:
    return GatewayError(502, f"The upstream `{upstream}` could not be reached: {reason}.", "upstream_unreachable")


def timed_out(upstream: str, phase: str) -> GatewayError:
    return GatewayError(504, f"The upstream `{upstream}` did not answer in time ({phase}).", "upstream_timeout")


def bad_answer(upstream: str, reason: str) -> GatewayError:
    return GatewayError(502, f"The upstream `{upstream}` answered in a way that cannot be passed on: {reason}.",
                        "upstream_error")


def upstream_status(upstream: str, status: int, headers: Headers) -> GatewayError:
    """An upstream's error answer that is not JSON (an HTML page from a proxy in front of it, a
    framework's plain-text traceback): its status, in the envelope, without its text."""
    return GatewayError(status, f"The upstream `{upstream}` answered HTTP {status} with a body that is not an "
                        "API error (not passed on).", "upstream_error",
                        type="server_error" if status >= 500 else "invalid_request_error", headers=headers)


def upstream_refused(upstream: str, status: int) -> GatewayError:
    return GatewayError(502, f"The upstream `{upstream}` refused modeldex's credentials (HTTP {status}): an "
                        "operator should check the key in its api_key_env variable.", "upstream_auth_failed")


def stream_error_event(protocol: str, message: str, code: str) -> bytes:
    """The event that ends a stream cut short: OpenAI's SDK raises on a `data:` object with `error`,
    Anthropic's on an `error` event."""
    if protocol == "anthropic":  # the envelope of its error answers: a timeout's status is 504's, else 502's
        data = anthropic_error_body(504 if code == "upstream_timeout" else 502, message, code, None)
        return b"event: error\ndata: " + data + b"\n\n"
    data = orjson.dumps({"error": {"message": message, "type": "server_error", "param": None, "code": code}})
    return b"data: " + data + b"\n\n"


def redact(body: bytes, secret: str | None) -> bytes:
    """`body` with every copy of the upstream's key blanked out (upstreams that echo credentials back)."""
    if not secret or len(secret) < 4:
        return body
    return body.replace(secret.encode(), REDACTED)
