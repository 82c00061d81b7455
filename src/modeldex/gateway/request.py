"""The request as the upstream gets it: the body with `model` rewritten, and the headers it may see.

Only what routing needs is parsed: a JSON body's top-level object (for `model` and `stream`), or, for a
multipart upload, the parts' headers until the `model` field (the audio itself is never looked at).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Any

import orjson

# Never forwarded: hop-by-hop headers (RFC 9110 §7.6.1), what the connection to the upstream sets anew,
# the caller's modeldex credential in any of the places clients put it, and compression (answers are
# streamed through as they come; a compressed event stream would be buffered by the decoder).
DROPPED_REQUEST_HEADERS = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
    "trailer", "transfer-encoding", "upgrade", "host", "content-length", "authorization", "x-api-key",
    "api-key", "cookie", "accept-encoding", "x-request-id", "expect", "forwarded", "x-forwarded-for",
    "x-forwarded-host", "x-forwarded-proto", "x-real-ip",
    "content-encoding",  # a compressed body is decoded here (decoded_body) and goes upstream as read
})
# Passed back from the upstream's answer (besides content-type).
PASSED_RESPONSE_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-")
# x-should-retry: the OpenAI and Anthropic SDKs retry (or not) as the server says, before their own rules.
PASSED_RESPONSE_HEADERS = frozenset({"content-type", "content-encoding", "openai-processing-ms", "retry-after",
                                     "retry-after-ms", "x-should-retry"})

# A parameter of a Content-Type: `; name=token` or `; name="quoted string"`.
_PARAMETER = re.compile(r';[ \t]*([^=;\s"]+)[ \t]*=[ \t]*("(?:[^"\\\r\n]|\\[^\r\n])*"|[^";\s]*)[ \t]*')
_QUOTED_PAIR = re.compile(r"\\(.)")
# RFC 2046's boundary: 1 to 70 of these characters, not ending in a space.
_BOUNDARY_VALUE = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_TOKEN = re.compile(r"[0-9A-Za-z!#$%&'*+\-.^_`|~]+")
# A part's field name (not `filename`): quoted, or bare as some parsers also accept it.
_FIELD_NAME = re.compile(rb'(?<![a-z0-9_*-])name\s*=\s*(?:"([^"]*)"|([^;\s]*))', re.IGNORECASE)


# Body members with which proxies serve other models than `model`: LiteLLM's client-side fallbacks (and its
# per-request router config), which it honours for the master key modeldex sends, and OpenRouter's list of
# models to try. Forwarded, they would let a key reach models its policy hides: refused instead.
OTHER_MODELS = ("fallbacks", "context_window_fallback_dict", "user_config", "models")


class BadRequest(Exception):
    """The body does not say which model, or cannot be read: the message says what is wrong."""

    def __init__(self, message: str, param: str | None = "model") -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(slots=True)
class Parsed:
    """What routing needs of a request body, and how to rewrite its model."""

    model: str
    stream: bool
    _json: dict[str, Any] | None = None
    _multipart: tuple[int, int] | None = None  # the model value's span in the raw body
    _raw: bytes = b""
    # The Content-Type the upstream gets (a multipart body's: naming only the boundary modeldex read it with).
    content_type: str | None = None
    _verbatim: bool = True  # whether `_raw` may go upstream as it is (see parse_json)

    @property
    def asks_usage(self) -> bool:
        """Whether the client asked for a stream's usage event (`stream_options.include_usage`)."""
        options = self._json.get("stream_options") if self._json is not None else None
        return isinstance(options, dict) and options.get("include_usage") is True

    def with_model(self, upstream_model: str, add_usage: bool = False) -> bytes:
        """The body, unchanged but for `model` (the original bytes when the ids are the same), and, with
        `add_usage`, a stream's request for usage (`stream_options.include_usage`)."""
        if self._json is not None and add_usage:
            options = self._json.get("stream_options")
            options = {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
            return orjson.dumps({**self._json, "model": upstream_model, "stream_options": options})
        if upstream_model == self.model and self._verbatim:
            return self._raw
        if self._json is not None:
            return orjson.dumps({**self._json, "model": upstream_model})
        assert self._multipart is not None
        start, end = self._multipart
        return self._raw[:start] + upstream_model.encode() + self._raw[end:]


class UnsupportedEncoding(BadRequest):
    """A Content-Encoding modeldex cannot decode: 415."""


class DecodedTooLarge(Exception):
    """A compressed body larger than the limit once decoded."""


def decoded_body(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """`body` without the codings its Content-Encoding names (gzip, deflate; identity is none), undone in
    reverse order, each bounded by `limit` bytes out (a small bomb cannot fill memory). Clients that
    compress their requests (gzip) were refused as "not valid JSON"; the upstream gets the decoded body."""
    codings = [c.strip().lower() for c in (content_encoding or "").split(",")]
    codings = [c for c in codings if c and c != "identity"]
    for coding in reversed(codings):
        if coding not in ("gzip", "x-gzip", "deflate"):
            raise UnsupportedEncoding(f"Content-Encoding `{coding[:40]}` is not supported: send the body "
                                      "uncompressed, or gzip or deflate.", param=None)
        out: list[bytes] = []
        size = 0
        rest = body
        try:
            while rest:  # gzip may hold several members, one after another
                # gzip: its header; deflate: zlib's wrapper (RFC 9110), or raw deflate as some clients send it
                wrapped = len(rest) > 1 and rest[0] & 0x0F == 8 and (rest[0] << 8 | rest[1]) % 31 == 0
                wbits = 16 + zlib.MAX_WBITS if coding != "deflate" else zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS
                decompressor = zlib.decompressobj(wbits)
                chunk = decompressor.decompress(rest, limit - size + 1)
                size += len(chunk)
                if size > limit or decompressor.unconsumed_tail:
                    raise DecodedTooLarge
                out.append(chunk)
                if not decompressor.eof:
                    raise zlib.error("truncated")
                rest = decompressor.unused_data if coding != "deflate" else b""
        except zlib.error:
            raise BadRequest(f"The request body is not valid {coding} data.", param=None) from None
        body = b"".join(out)
    return body


def parse_json(body: bytes) -> Parsed:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("The request body is not valid JSON.", param=None) from None
    if not isinstance(data, dict):
        raise BadRequest("The request body must be a JSON object.", param=None)
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("You must provide a model parameter.")
    for name in OTHER_MODELS:
        if name in data:
            raise BadRequest(f"`{name}` is not accepted: it would let the upstream serve other models than "
                             "`model`, which is the model this key is checked for.", param=name)
    # The bytes go upstream as sent only when they cannot hold `model` twice. orjson keeps the last of
    # duplicate keys; an upstream whose parser keeps the first (RapidJSON's, simdjson's) would serve another
    # model than the one the key's policy was checked against. A second `"model"`, or any `\u` escape
    # (a key may be spelled `"mod\u0065l"`), sends the body as orjson read it: one `model`, the checked one.
    verbatim = body.count(b'"model"') == 1 and b"\\u" not in body
    return Parsed(model, data.get("stream") is True, _json=data, _raw=body, _verbatim=verbatim)


def multipart_boundary(content_type: str | None) -> str:
    """The boundary of a `multipart/form-data` Content-Type. Refused unless the header is well formed and
    names exactly one `boundary` parameter: parsers differ on which of two they take (python-multipart,
    under Starlette and FastAPI, the last one), so an upstream could read the body with another boundary
    than the one checked here, and find another `model` in it."""
    media_type, _, rest = (content_type or "").partition(";")
    if media_type.strip().lower() != "multipart/form-data":
        raise BadRequest("This endpoint takes multipart/form-data with a model field.", param=None)
    boundaries: list[tuple[str, str]] = []
    position, rest = 0, ";" + rest.rstrip(" \t;") if rest.strip(" \t;") else ""  # a trailing `;` is harmless
    while position < len(rest):
        match = _PARAMETER.match(rest, position)
        if match is None:
            raise BadRequest("The Content-Type header's parameters cannot be read.", param=None)
        name, value = match.group(1).lower(), match.group(2)
        if name.startswith("boundary"):  # `boundary*` (RFC 2231) too: some parsers read it
            boundaries.append((name, _QUOTED_PAIR.sub(r"\1", value[1:-1]) if value.startswith('"') else value))
        position = match.end()
    if len(boundaries) != 1 or boundaries[0][0] != "boundary" or not _BOUNDARY_VALUE.fullmatch(boundaries[0][1]):
        raise BadRequest("The Content-Type header must name one multipart boundary (boundary=...).", param=None)
    return boundaries[0][1]


def parse_multipart(body: bytes, content_type: str | None) -> Parsed:
    """The `model` form field of a multipart/form-data body. Every part's headers are read (never a file's
    contents), and a body naming `model` in more than one part is refused: an upstream's form parser may
    take another of them than the one checked here (Starlette's takes the last), which would let a key
    call a model its policy hides. For the same reason the body must be unambiguous: the boundary appears
    only as a delimiter line (at the start or after CRLF, followed by CRLF, or `--` at the close, which
    ends the body), never inside a line (where parsers that accept bare LF line ends would find parts this
    one does not), and the upstream is sent a Content-Type naming that boundary only."""
    boundary = multipart_boundary(content_type)
    delimiter = b"--" + boundary.encode("latin-1")
    found: tuple[int, int] | None = None
    named_model = 0
    closed = False
    position = body.find(delimiter)
    while position != -1:
        if position != 0 and body[position - 2:position] != b"\r\n":
            raise BadRequest("The multipart body is malformed: its boundary appears inside a line.", param=None)
        after = position + len(delimiter)
        if body.startswith(b"--", after):  # the close delimiter: the rest is an epilogue with no boundary in it
            closed = body.find(delimiter, after) == -1
            break
        if not body.startswith(b"\r\n", after):
            raise BadRequest("The multipart body is malformed: a boundary line does not end with CRLF.",
                             param=None)
        head_start = after + 2
        head_end = body.find(b"\r\n\r\n", head_start)
        if head_end == -1:
            break
        value_start = head_end + 4
        following = body.find(b"\r\n" + delimiter, value_start)
        if following == -1:
            break
        head = body[head_start:head_end]
        if delimiter in head:
            raise BadRequest("The multipart body is malformed: its boundary appears inside a line.", param=None)
        names = [quoted or bare for quoted, bare in _FIELD_NAME.findall(head)]
        if any(name.lower() == b"model" for name in names):
            named_model += 1
            if names == [b"model"] and b"filename" not in head.lower():
                found = (value_start, following)
        position = following + 2
        if body.find(delimiter, value_start) != position:  # the boundary inside the part's value
            raise BadRequest("The multipart body is malformed: its boundary appears inside a line.", param=None)
    if not closed:
        raise BadRequest("The multipart body is malformed: it does not end with its closing boundary.",
                         param=None)
    if named_model > 1:
        raise BadRequest("The model field appears more than once; send it once.")
    if found is None or named_model != 1:
        raise BadRequest("You must provide a model parameter.")
    start, end = found
    try:
        model = body[start:end].decode()
    except UnicodeDecodeError:
        raise BadRequest("The model field is not UTF-8.") from None
    if not model:
        raise BadRequest("You must provide a model parameter.")
    shown = boundary if _TOKEN.fullmatch(boundary) else '"' + boundary + '"'
    return Parsed(model, False, _multipart=found, _raw=body, content_type=f"multipart/form-data; boundary={shown}")


def upstream_headers(headers: list[tuple[str, str]], request_id: str, protocol: str, api_key: str | None
                     ) -> dict[str, str]:
    """The client's headers minus those above (and those its `Connection` header names: hop-by-hop too),
    with the request id and the upstream's own key."""
    connection = next((value for name, value in headers if name == "connection"), "")
    dropped = DROPPED_REQUEST_HEADERS | {token.strip().lower() for token in connection.split(",")} \
        if connection else DROPPED_REQUEST_HEADERS
    forwarded = {name: value for name, value in headers if name not in dropped}
    forwarded["x-request-id"] = request_id
    if api_key:
        if protocol == "anthropic":
            forwarded["x-api-key"] = api_key
        else:
            forwarded["authorization"] = f"Bearer {api_key}"
    return forwarded


def passed_back(headers: Any, own: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """The upstream answer's headers a client may see (rate limits, processing time, retry-after), but for
    those modeldex sets itself (`own`: a limited key's `x-ratelimit-*`): both went out, and clients read
    `x-ratelimit-remaining-requests: 9, 99` (httpx joins them), or the upstream's figure for modeldex's key."""
    mine = {name for name, _ in own} if own else ()
    kept = []
    for name, value in headers.items():
        lower = name.lower()
        if (lower in PASSED_RESPONSE_HEADERS or lower.startswith(PASSED_RESPONSE_PREFIXES)) and lower not in mine:
            kept.append((lower, value))
    return kept
