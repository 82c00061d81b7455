"""Forwarding one request: try its targets in order, relay the first answer that can be passed on, stream
events on as they arrive, and stop the upstream the moment the client leaves.

Retries happen only before anything reached the client: on a connect error, a timeout before the
answer's headers, a 429 or a 5xx (the upstream then rests for its `retry-after`, or a back-off), up to
`attempts` targets. Once the answer started, a failure ends it with an error event, never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field

import aiohttp
import orjson

from modeldex.gateway import errors
from modeldex.gateway.client import UpstreamClient
from modeldex.gateway.downstream import ClientGone, Downstream
from modeldex.gateway.endpoints import Endpoint
from modeldex.gateway.errors import GatewayError, redact
from modeldex.gateway.health import RouteHealth
from modeldex.gateway.request import Parsed, passed_back, upstream_headers
from modeldex.gateway.routing import Target, attempt_order

Headers = list[tuple[str, str]]
MAX_ERROR_BODY = 1 << 20  # an upstream's error answer is read whole (to redact it) up to this size
MAX_WHOLE_BODY = 8 << 20  # answers with a length up to this are read and answered in one call
OVERHEAD_HEADER = "x-modeldex-overhead-duration-ms"
SSE = "text/event-stream"
JSON_TYPE = "application/json"
USAGE_STREAMS = ("/v1/chat/completions", "/v1/completions")
_USAGE_MARKS = (b'"usage":{', b'"usage": {')
WATCH_DELAY_S = 0.01  # see Forwarder.forward


@dataclass(slots=True)
class Call:
    """A request the API layer admitted: its caller may see the model, and these are its targets."""

    endpoint: Endpoint
    parsed: Parsed
    targets: list[Target]
    client_headers: list[tuple[str, str]]
    request_id: str
    started: float  # time.perf_counter() when the request arrived
    answer_headers: Headers = field(default_factory=list)  # added to the answer (rate limits, CORS)

    @property
    def add_usage(self) -> bool:
        """A stream of OpenAI chat or text completions without usage asked for: modeldex asks for it (to
        count tokens), and drops that event before it reaches the client."""
        return (self.parsed.stream and self.endpoint.path in USAGE_STREAMS and not self.parsed.asks_usage)


@dataclass(slots=True)
class Outcome:
    """How it went, for the access log and metrics."""

    status: int = 0
    upstream: str | None = None
    upstream_model: str | None = None
    attempts: int = 0
    first_byte_ms: float | None = None  # from arrival to the answer's first bytes going to the client
    overhead_ms: float = 0.0
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _json_object(body: bytes) -> bool:
    """Whether `body` is a JSON object (an error answer in some API's envelope)."""
    try:
        return isinstance(orjson.loads(body), dict)
    except orjson.JSONDecodeError:
        return False


def _usage(body: bytes, outcome: Outcome) -> bool:
    """Token counts from an answer's `usage` (OpenAI's prompt/completion or input/output names), or from the
    `usage` of the object a stream's event carries: the Responses API's `response.completed` holds it in
    `response`, Anthropic's `message_start` in `message` (its `message_delta` then has the output count at
    the top). False when the body is not JSON at all."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    usage = document.get("usage") if isinstance(document, dict) else None
    if usage is None and isinstance(document, dict):
        inner = document.get("response", document.get("message"))
        usage = inner.get("usage") if isinstance(inner, dict) else None
    if isinstance(usage, dict):
        prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
        completion = usage.get("completion_tokens", usage.get("output_tokens"))
        if isinstance(prompt, int):
            outcome.prompt_tokens = prompt
        if isinstance(completion, int):
            outcome.completion_tokens = completion
    return True


def _take_usage(events: bytes, outcome: Outcome, drop: bool) -> bytes:
    """Record the token counts of the usage event among `events` (whole events); with `drop`, leave out
    the usage-only event the client did not ask for (its `choices` empty)."""
    if not drop:
        for line in events.split(b"\n"):
            if line.startswith(b"data:") and any(mark in line for mark in _USAGE_MARKS):
                _usage(line[5:].strip(), outcome)
        return events
    kept = []
    for event in events.replace(b"\r\n", b"\n").split(b"\n\n"):
        if not event:
            continue
        data = b"".join(line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:"))
        if any(mark in data for mark in _USAGE_MARKS):
            _usage(data, outcome)
            try:
                document = orjson.loads(data)
            except orjson.JSONDecodeError:
                document = None
            if isinstance(document, dict) and document.get("choices") == []:
                continue
        kept.append(event + b"\n\n")
    return b"".join(kept)


def _whole_events(data: bytes) -> tuple[bytes, bytes]:
    """`data` split after its last complete server-sent event (a blank line ends one: LF LF or CRLF CRLF)."""
    lf = data.rfind(b"\n\n")
    crlf = data.rfind(b"\r\n\r\n")
    end = max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)
    return data[:end], data[end:]


class _ReadTimer:
    """The idle and total timeouts of a streamed answer's reads, with one timer per idle period instead of
    one per read: `asyncio.timeout` around each read cost 5.4 µs (measured on this machine), once per
    event of a model's stream; here a read costs two attribute stores. The timer checks, when it fires,
    whether the current read has waited `idle` (or the total deadline passed) and only then expires
    `guard`, which cancels the read; else it is set again for when the current read could expire. Time
    spent sending to the client is not a read: a slow client does not time out the upstream."""

    __slots__ = ("deadline", "guard", "handle", "idle", "loop", "reading", "started")

    def __init__(self, loop: asyncio.AbstractEventLoop, idle: float, deadline: float) -> None:
        self.loop, self.idle, self.deadline = loop, idle, deadline
        self.started = loop.time()  # when the current read began
        self.reading = False
        self.guard: asyncio.Timeout | None = None
        self.handle: asyncio.TimerHandle | None = None

    def arm(self, guard: asyncio.Timeout) -> None:
        self.guard = guard
        self.handle = self.loop.call_at(min(self.loop.time() + self.idle, self.deadline), self._check)

    def _check(self) -> None:
        now = self.loop.time()
        if self.reading:
            due = min(self.started + self.idle, self.deadline)
            if now >= due:
                assert self.guard is not None
                self.guard.reschedule(now)  # expired: the read is cancelled, the guard raises TimeoutError
                return
        else:
            due = min(now + self.idle, self.deadline) if now < self.deadline else now + self.idle
        self.handle = self.loop.call_at(due, self._check)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()


class Forwarder:
    def __init__(self, client: UpstreamClient, health: RouteHealth, attempts: int = 3,
                 chooser: random.Random | None = None, watch_delay: float = WATCH_DELAY_S) -> None:
        self.client = client
        self.watch_delay = watch_delay
        self.health = health
        self.attempts = max(1, attempts)
        self._chooser = chooser or random.Random()

    async def forward(self, call: Call, downstream: Downstream) -> Outcome:
        """Forward `call` and answer the client; returns how it went. When the client disconnects first,
        the upstream request is cancelled at once (its connection closed) and the status is 499.

        The watch for the client leaving starts `watch_delay` seconds in, not at once: a pending watch made
        granian's answer call slower, and with its task and `asyncio.wait` it cost about 0.1 ms of the
        gateway's 0.4 ms added p50 (bench/gateway.py, not streamed: 0.43 -> 0.31 ms). A request over by then
        (an instant upstream's) never pays for it; a client gone earlier is noticed when it starts."""
        outcome = Outcome()
        loop = asyncio.get_running_loop()
        forwarding = loop.create_task(self._forward(call, downstream, outcome))
        watching: list[asyncio.Task[None]] = []

        def watch() -> None:
            if not forwarding.done():
                task = loop.create_task(downstream.gone())
                task.add_done_callback(lambda _: forwarding.cancel())
                watching.append(task)

        timer = loop.call_later(self.watch_delay, watch)
        try:
            await forwarding
        except ClientGone:
            outcome.status, outcome.error = 499, "client closed the connection"
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not forwarding.cancelled() or (current is not None and current.cancelling()):
                raise  # not the watch's doing: this request itself is being cancelled
            # the watch saw the client leave; the upstream response is closed by now
            outcome.status, outcome.error = 499, "client closed the connection"
        finally:
            timer.cancel()
            if watching:
                watching[0].cancel()
                with contextlib.suppress(asyncio.CancelledError, ClientGone):
                    await watching[0]
        return outcome

    async def _forward(self, call: Call, downstream: Downstream, outcome: Outcome) -> None:
        loop = asyncio.get_running_loop()
        timeouts = self.client.timeouts
        deadline = loop.time() + timeouts.total
        order = attempt_order(call.targets, self.health, self._chooser)[:self.attempts]
        failure: GatewayError | tuple[int, Headers, bytes] | None = None
        session = self.client.session()
        for index, target in enumerate(order):
            last = index == len(order) - 1
            outcome.attempts += 1
            outcome.upstream, outcome.upstream_model = target.upstream, target.upstream_model
            url = target.base_url + call.endpoint.upstream_path
            body = call.parsed.with_model(target.upstream_model, add_usage=call.add_usage)
            headers = upstream_headers(call.client_headers, call.request_id, call.endpoint.protocol,
                                       target.api_key)
            if call.parsed.content_type is not None:  # a multipart body: the boundary it was checked with
                headers["content-type"] = call.parsed.content_type
            sent = time.perf_counter()
            first_byte_bound = timeouts.first_byte < deadline - loop.time()  # which timeout can end the wait
            try:
                async with asyncio.timeout(min(timeouts.first_byte, max(0.0, deadline - loop.time()))):
                    response = await session.post(url, data=body, headers=headers, allow_redirects=False)
            except TimeoutError:
                failure = errors.timed_out(target.upstream, "no answer before the first-byte timeout"
                                           if first_byte_bound else "the request's total timeout ran out before "
                                           "an answer")
                self.health.failed(target.upstream, "timeout before the first byte")
                continue
            except (aiohttp.ClientError, OSError) as exc:
                reason = ("connection refused or failed" if isinstance(exc, aiohttp.ClientConnectorError)
                          else type(exc).__name__)
                failure = errors.unreachable(target.upstream, reason)
                self.health.failed(target.upstream, reason)
                continue
            received = time.perf_counter()
            complete = False
            try:
                status = response.status
                if status == 429 or status >= 500:
                    self.health.failed(target.upstream, f"HTTP {status}", _retry_after(response.headers.get("retry-after")))
                    if not last:
                        continue
                elif 300 <= status < 400:  # never followed (it could lead our key elsewhere): a misconfigured URL
                    self.health.failed(target.upstream, f"HTTP {status} (a redirect)")
                    if not last:
                        continue
                else:  # it answers: healthy, whatever it thinks of the request
                    self.health.succeeded(target.upstream)
                outcome.overhead_ms = ((sent - call.started) * 1000)
                await self._relay(call, target, response, downstream, outcome, deadline, received)
                complete = True
                return
            finally:
                if complete and response.content.is_eof():
                    response.release()  # read to the end: the connection goes back to the pool
                else:
                    response.close()  # cut short: the connection goes, and the upstream sees it close
        assert failure is not None
        await self._answer_error(call, downstream, outcome, failure)

    async def _answer_error(self, call: Call, downstream: Downstream, outcome: Outcome,
                            failure: GatewayError | tuple[int, Headers, bytes]) -> None:
        if isinstance(failure, GatewayError):
            status, headers = failure.status, [*failure.headers]
            body = failure.body(call.endpoint.protocol, call.request_id)
            headers.append(("content-type", "application/json"))
            outcome.error = failure.code
        else:
            status, headers, body = failure
        outcome.status = status
        await downstream.answer(status, [("x-request-id", call.request_id), *headers, *call.answer_headers], body)

    async def _read_up_to(self, response: aiohttp.ClientResponse, limit: int, deadline: float
                          ) -> tuple[bytes, bool]:
        """The answer's body, and True; or, once it is past `limit` bytes, what has come so far, and False."""
        loop = asyncio.get_running_loop()
        idle = self.client.timeouts.idle
        length = response.content_length
        if length is not None and length <= limit:  # one read under one timer (a completion's usual case)
            async with asyncio.timeout(min(idle, max(0.0, deadline - loop.time()))):
                return await response.read(), True
        chunks: list[bytes] = []
        size = 0
        while True:
            async with asyncio.timeout(min(idle, max(0.0, deadline - loop.time()))):
                chunk = await response.content.readany()
            if not chunk:
                return b"".join(chunks), True
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                return b"".join(chunks), False

    async def _relay(self, call: Call, target: Target, response: aiohttp.ClientResponse, downstream: Downstream,
                     outcome: Outcome, deadline: float, received: float) -> None:
        status = response.status
        if status in (401, 403):  # the caller's key is fine: it is modeldex's key the upstream refused
            outcome.error = f"upstream HTTP {status}"
            await self._answer_error(call, downstream, outcome, errors.upstream_refused(target.upstream, status))
            return
        if 300 <= status < 400:  # a redirect, passed on bare (no Location), was an APIStatusError 302 in the SDKs
            await self._answer_error(call, downstream, outcome, errors.bad_answer(
                target.upstream, f"it answered with a redirect (HTTP {status}), which modeldex does not follow; "
                "an operator should check its base URL"))
            return
        headers = [("x-request-id", call.request_id), *passed_back(response.headers, call.answer_headers),
                   *call.answer_headers]
        content_type = response.headers.get("content-type", "")
        length = response.content_length
        sse = content_type.startswith(SSE)
        # A JSON answer to a request that did not ask for a stream is read whole even when its length is not
        # declared (chunked), up to MAX_WHOLE_BODY: an upstream that breaks off is then a 502, not a 200 with
        # half a document (granian can only end a chunked answer cleanly). Past that it streams on.
        chunked_json = (length is None and not call.parsed.stream and content_type.startswith(JSON_TYPE))
        if status >= 400 or (not sse and length is not None and length <= MAX_WHOLE_BODY) or chunked_json:
            limit = MAX_ERROR_BODY if status >= 400 else MAX_WHOLE_BODY
            try:
                body, whole = await self._read_up_to(response, limit, deadline)
            except TimeoutError:
                await self._answer_error(call, downstream, outcome,
                                         errors.timed_out(target.upstream, "the answer stalled"))
                return
            except (aiohttp.ClientError, OSError):
                await self._answer_error(call, downstream, outcome,
                                         errors.bad_answer(target.upstream, "the connection closed mid-answer"))
                return
            if not whole:
                if status >= 400:  # an error answer too large to pass on
                    await self._answer_error(call, downstream, outcome, errors.bad_answer(
                        target.upstream, f"the answer is larger than {limit} bytes"))
                else:
                    await self._stream(call, target, response, downstream, outcome, deadline, received, headers,
                                       sse, first=body)
                return
            if status >= 400:
                if not _json_object(body):  # a proxy's HTML page, a framework's text traceback: not passed on
                    kept = [(name, value) for name, value in passed_back(response.headers, call.answer_headers)
                            if name not in ("content-type", "content-encoding")]  # retry-after, rate limits
                    await self._answer_error(call, downstream, outcome,
                                             errors.upstream_status(target.upstream, status, kept))
                    outcome.error = f"upstream HTTP {status}"
                    return
                body = redact(body, target.api_key)
                outcome.error = f"upstream HTTP {status}"
            elif status == 200 and not _usage(body, outcome) and content_type.startswith(JSON_TYPE):
                await self._answer_error(call, downstream, outcome,
                                         errors.bad_answer(target.upstream, "its body is not valid JSON"))
                return
            outcome.overhead_ms += (time.perf_counter() - received) * 1000
            headers.append((OVERHEAD_HEADER, f"{outcome.overhead_ms:.3f}"))
            outcome.status = status
            outcome.first_byte_ms = (time.perf_counter() - call.started) * 1000
            await downstream.answer(status, headers, body)
            return
        await self._stream(call, target, response, downstream, outcome, deadline, received, headers, sse)

    async def _stream(self, call: Call, target: Target, response: aiohttp.ClientResponse, downstream: Downstream,
                      outcome: Outcome, deadline: float, received: float, headers: Headers, sse: bool,
                      first: bytes = b"") -> None:
        """Pass the answer on chunk by chunk, as each arrives (after `first`, what was read of it already);
        a stream cut short ends with an error event."""
        loop = asyncio.get_running_loop()
        idle = self.client.timeouts.idle
        if sse:
            headers += [("cache-control", "no-cache"), ("x-accel-buffering", "no")]
        elif response.content_length is not None:
            # Its length goes on (the bytes are passed as they come, never decoded): an upstream that breaks
            # off then closes the client's connection short of it, which clients raise, where a chunked
            # answer could only end cleanly (a large embeddings list or audio file, silently cut short).
            headers.append(("content-length", str(response.content_length)))
        outcome.overhead_ms += (time.perf_counter() - received) * 1000
        headers.append((OVERHEAD_HEADER, f"{outcome.overhead_ms:.3f}"))
        outcome.status = response.status
        await downstream.start(response.status, headers)
        if first:
            outcome.first_byte_ms = (time.perf_counter() - call.started) * 1000
            await downstream.send(first)
        pending = b""  # an event's start whose end has not come yet (SSE): sent once it is whole
        problem: tuple[str, str] | None = None
        timer = _ReadTimer(loop, idle, deadline)
        try:
            async with asyncio.timeout(None) as guard:
                timer.arm(guard)
                while True:
                    if loop.time() >= deadline:
                        problem = ("the upstream's answer took longer than the total timeout", "upstream_timeout")
                        break
                    timer.started, timer.reading = loop.time(), True
                    try:
                        chunk = await response.content.readany()
                    except (aiohttp.ClientError, OSError):
                        problem = ("the upstream closed the connection mid-answer", "upstream_error")
                        break
                    timer.reading = False
                    if not chunk:
                        if pending.strip():
                            problem = ("the upstream closed the stream mid-event", "upstream_error")
                        break
                    if sse:  # whole events only, each sent on as soon as its end arrives
                        chunk, pending = _whole_events(pending + chunk)
                        if not chunk:
                            continue
                        if any(mark in chunk for mark in _USAGE_MARKS):
                            chunk = _take_usage(chunk, outcome, drop=call.add_usage)
                            if not chunk:
                                continue
                    if outcome.first_byte_ms is None:
                        outcome.first_byte_ms = (time.perf_counter() - call.started) * 1000
                    await downstream.send(chunk)
        except TimeoutError:
            problem = (("the upstream sent nothing for longer than the idle timeout" if loop.time() < deadline
                        else "the upstream's answer took longer than the total timeout"), "upstream_timeout")
        finally:
            timer.stop()
        if problem is not None:
            message, code = problem
            outcome.error = code
            if sse:
                with contextlib.suppress(ClientGone):
                    await downstream.send(errors.stream_error_event(call.endpoint.protocol, f"{message}.", code))
        await downstream.finish()
