"""Prometheus metrics, with the official client.

Every server worker is its own process, so the client runs in multiprocess mode: `serve` points
PROMETHEUS_MULTIPROC_DIR at a fresh directory before the workers start, each worker writes its samples
there, and whoever answers a scrape adds them up. Route labels are a fixed, small set.
"""

from __future__ import annotations

import bisect
import collections
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily

from modeldex.ops.processes import alive

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

REQUESTS = Counter("modeldex_requests", "HTTP requests answered, by route and status.", ["route", "status"])
LATENCY = Histogram(
    "modeldex_request_duration_seconds", "Time to answer a request, by route.", ["route"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
RATE_LIMITED = Counter("modeldex_rate_limited", "Requests refused with 429, by reason.", ["reason"])
RATE_LIMIT_DEGRADED = Gauge("modeldex_ratelimit_degraded",
                            "1 while a worker counts rate limits in its own memory because Redis is unavailable.",
                            multiprocess_mode="livemax")
RATE_LIMIT_FALLBACKS = Counter("modeldex_ratelimit_fallbacks",
                               "Rate-limit checks counted in process memory because Redis was unavailable.")
CATALOG_MODELS = Gauge("modeldex_catalog_models", "Models in the catalog (served and not).",
                       multiprocess_mode="livemax")
CATALOG_VERSION = Gauge("modeldex_catalog_version", "Catalog version being served.", multiprocess_mode="livemax")
SNAPSHOT_AGE = Gauge("modeldex_snapshot_age_seconds",
                     "Seconds since a worker last confirmed its catalog copy is current (highest worker).",
                     multiprocess_mode="livemax")
# Gauges count live workers only (`forget_dead_workers`): a replaced worker's last word (a store_up of 0,
# say) must not hold the minimum forever.
STORE_UP = Gauge("modeldex_store_up", "1 if every worker reached the database on its last check.",
                 multiprocess_mode="livemin")


class _Tallies:
    """Per-worker request counts, flushed into prometheus_client about once a second.

    A sample in multiprocess mode costs ~8 µs (locks, mmap writes): a fifth of the whole hot path. A
    request only appends its duration to the list of its route and status (~0.06 µs); the flush counts and
    buckets each list at once (~0.1 µs a request, against 0.27 when it took (route, status, duration)
    tuples one by one off a deque: measured, 100,000 requests), and a scrape is at most a second behind
    (and never behind for the worker that answers it: it flushes first).

    No lock on the request path: the event loop only appends, and the flusher (a thread, or a scrape)
    takes the first n items of a list and then deletes those n, each one C call under the GIL, so a
    duration appended meanwhile stays for the next flush.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # one flusher at a time
        self._bounds = LATENCY._upper_bounds  # the histogram's own buckets, +Inf last
        self._durations: dict[tuple[str, int], list[float]] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.recorder(route, status)(seconds)

    def recorder(self, route: str, status: int) -> Callable[[float], None]:
        """Where a request of this route and status appends its duration in seconds: the list's own
        `append`, a C call. An answer that knows its route and status before it is asked for (a remembered
        Models answer) keeps one: 1,500 instructions a request less than `observe` (callgrind). The lists
        are only ever emptied in place, never replaced, so a kept `append` stays good."""
        durations = self._durations.get((route, status))
        if durations is None:
            durations = self._durations.setdefault((route, status), [])
        return durations.append

    def flush(self) -> None:
        bounds = self._bounds
        counts: dict[tuple[str, int], int] = {}
        sums: dict[str, float] = collections.defaultdict(float)
        buckets: dict[str, list[int]] = {}
        with self._lock:
            for (route, status), durations in list(self._durations.items()):
                taken = len(durations)
                if not taken:
                    continue
                batch = durations[:taken]
                del durations[:taken]
                counts[(route, status)] = taken
                sums[route] += sum(batch)
                per_bucket = buckets.get(route)
                if per_bucket is None:
                    per_bucket = buckets[route] = [0] * len(bounds)
                batch.sort()  # then one bisection per bucket, not one per request
                below = 0
                for index, bound in enumerate(bounds):
                    upto = bisect.bisect_right(batch, bound)  # bucket `index` holds durations <= its bound
                    per_bucket[index] += upto - below
                    below = upto
                    if below == taken:
                        break
        for (route, status), count in counts.items():
            REQUESTS.labels(route, str(status)).inc(count)
        for route, per_bucket in buckets.items():
            # Histogram.observe() takes one sample at a time; its children's values are the way to add many.
            child = LATENCY.labels(route)
            child._sum.inc(sums[route])
            for index, count in enumerate(per_bucket):
                if count:
                    child._buckets[index].inc(count)


_tallies = _Tallies()
observe = _tallies.observe
recorder = _tallies.recorder


def flush() -> None:
    _tallies.flush()
    _flush_gateway()


_flushing = threading.Event()


def start_flushing(interval: float = 1.0) -> None:
    """Flush this worker's tallies in the background (one daemon thread per process, however many apps
    it runs)."""
    if _flushing.is_set():
        return
    _flushing.set()

    def run() -> None:
        while True:
            time.sleep(interval)
            flush()

    threading.Thread(target=run, name="modeldex-metrics", daemon=True).start()


def catalog_state(models: int, version: int, confirmed_at: float, store_up: bool) -> None:
    """Called by each worker's refresher on every check."""
    CATALOG_MODELS.set(models)
    CATALOG_VERSION.set(version)
    SNAPSHOT_AGE.set(max(0.0, time.monotonic() - confirmed_at))
    STORE_UP.set(1 if store_up else 0)


class LatestRead:
    """A slow read (the database) that a caller waits for at most `wait_s`: past that it gets the last value
    read (None before the first), while the read finishes in the background. One read at a time, so a hung
    database holds one thread, not one per scrape. A frozen database made every scrape hang before."""

    def __init__(self, read: Callable[[], Any], wait_s: float = 1.0) -> None:
        self._read = read
        self._wait_s = wait_s
        self._lock = threading.Lock()
        self._value: Any = None
        self._done: threading.Event | None = None

    def get(self) -> Any:
        with self._lock:
            done = self._done
            if done is None or done.is_set():
                done = self._done = threading.Event()
                threading.Thread(target=self._refresh, args=(done,), name="modeldex-metrics-read",
                                 daemon=True).start()
        done.wait(self._wait_s)
        return self._value

    def _refresh(self, done: threading.Event) -> None:
        try:
            self._value = self._read()
        except Exception:  # the database may be away: keep the last value
            pass
        finally:
            done.set()


class UpstreamCollector:
    """Upstream health, read from the store when scraped (it lives there, shared by every replica), or as
    last read when the store is slow to answer."""

    def __init__(self, read_health: Callable[[], dict[str, Any]]) -> None:
        self._health = LatestRead(read_health)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        health = self._health.get()
        if health is None:  # never read yet; the other metrics still answer
            return
        up = GaugeMetricFamily("modeldex_upstream_up", "1 if the upstream's last poll succeeded.",
                               labels=["upstream"])
        models = GaugeMetricFamily("modeldex_upstream_models", "Models the upstream listed at its last success.",
                                   labels=["upstream"])
        success = GaugeMetricFamily("modeldex_upstream_last_success_timestamp_seconds",
                                    "When the upstream was last polled successfully.", labels=["upstream"])
        latency = GaugeMetricFamily("modeldex_upstream_latency_seconds", "The upstream's last poll latency.",
                                    labels=["upstream"])
        for name, state in sorted(health.items()):
            up.add_metric([name], 1.0 if state.status == "ok" else 0.0)
            models.add_metric([name], float(state.model_count))
            if state.last_success_at is not None:
                success.add_metric([name], state.last_success_at)
            if state.latency_ms is not None:
                latency.add_metric([name], state.latency_ms / 1000)
        yield from (up, models, success, latency)


ExtraCollector = Callable[[CollectorRegistry], None]
_extra: dict[str, ExtraCollector] = {}


def add_collector(name: str, register: ExtraCollector) -> None:
    """Let another part (e.g. discovery) add scrape-time metrics to every exposition; a later one of the
    same name replaces it (an app started again in the same process)."""
    _extra[name] = register




def forget_dead_workers() -> None:
    """Drop the gauge files of workers that died (granian replaces them), as prometheus_client asks."""
    path = os.environ.get(MULTIPROC_ENV)
    if not path:
        return
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        match = _LIVE_GAUGE_FILE.fullmatch(name)
        if match and not alive(int(match.group(1))):
            multiprocess.mark_process_dead(int(match.group(1)), path)  # type: ignore[no-untyped-call]


class DeadWorkerSweeper:
    """A collector that yields nothing, registered first: dead workers' gauges are gone before the others
    are read (for a registry not collected through `exposition`, such as --metrics-port's)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        forget_dead_workers()
        return iter(())


_extra_lock = threading.Lock()
_extra_registry: tuple[tuple[object, ...], CollectorRegistry] | None = None


def _extra_collectors(multiprocess_mode: bool) -> CollectorRegistry:
    """The scrape-time collectors (and, in multiprocess mode, every worker's samples) in one registry, made
    again only when `add_collector` changed them. Made anew per scrape, each scrape had a new
    UpstreamCollector: its "last read" was always empty, so while the database hung every scrape waited
    its second, left a reader thread behind, and answered without any modeldex_upstream_* series."""
    global _extra_registry
    with _extra_lock:
        registers = tuple(_extra.values())
        made_for = (*registers, multiprocess_mode)
        if _extra_registry is None or _extra_registry[0] != made_for:
            registry = CollectorRegistry()
            for register in registers:
                register(registry)
            if multiprocess_mode:
                multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            _extra_registry = (made_for, registry)
        return _extra_registry[1]


def exposition() -> bytes:
    """The text a scrape gets: all workers' samples when in multiprocess mode, this process's otherwise."""
    flush()
    multiprocess_mode = bool(os.environ.get(MULTIPROC_ENV))
    extra = _extra_collectors(multiprocess_mode)
    if multiprocess_mode:
        forget_dead_workers()
        return generate_latest(extra)
    from prometheus_client import REGISTRY  # one process (in-process tests): its own samples

    return generate_latest(REGISTRY) + generate_latest(extra)


# --- the inference gateway: per model and upstream (models the caller may see only: a bounded set) -------

GATEWAY_REQUESTS = Counter("modeldex_gateway_requests", "Inference requests, by route, model, upstream, status.",
                           ["route", "model", "upstream", "status"])
GATEWAY_ERRORS = Counter("modeldex_gateway_errors", "Inference requests that failed (status >= 400 or cut short).",
                         ["model", "upstream"])
_GATEWAY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
GATEWAY_LATENCY = Histogram("modeldex_gateway_duration_seconds", "Inference requests' total time.",
                            ["model", "upstream"], buckets=_GATEWAY_BUCKETS)
GATEWAY_FIRST_BYTE = Histogram("modeldex_gateway_first_byte_seconds",
                               "Time from an inference request's arrival to its answer's first byte.",
                               ["model", "upstream"], buckets=_GATEWAY_BUCKETS)
GATEWAY_TOKENS = Counter("modeldex_gateway_tokens", "Tokens the upstreams reported, in (prompt) and out.",
                         ["model", "upstream", "direction"])
GATEWAY_UPSTREAM_UP = Gauge("modeldex_gateway_upstream_up",
                            "0 while an upstream rests after failing inference requests (lowest worker).",
                            ["upstream"], multiprocess_mode="livemin")


def gateway_upstream_up(upstream: str, up: bool) -> None:
    GATEWAY_UPSTREAM_UP.labels(upstream).set(1 if up else 0)


# (route, model, upstream, status, seconds, first byte seconds, tokens in, tokens out, failed): appended per
# request, turned into samples by the periodic flush, as the request tallies are (a multiprocess sample
# costs microseconds; five per request would be most of what the gateway adds).
_gateway_pending: collections.deque[tuple[str, str, str, int, float, float | None, int, int, bool]] = \
    collections.deque()


def gateway_request(route: str, model: str | None, outcome: Any, status: int, seconds: float) -> None:
    """One inference request: `outcome` (gateway.forward.Outcome) when it reached the gateway, whose model
    label is then a model the caller may see; other requests are counted under model "-"."""
    if outcome is None:
        _gateway_pending.append((route, "-", "-", status, seconds, None, 0, 0, status >= 400))
        return
    first_byte = None if outcome.first_byte_ms is None else outcome.first_byte_ms / 1000
    _gateway_pending.append((route, model or "-", outcome.upstream or "-", status, seconds, first_byte,
                             outcome.prompt_tokens or 0, outcome.completion_tokens or 0,
                             status >= 400 or outcome.error is not None))


class _Observed:
    """A histogram's samples added up between two flushes: their sum and their count per bucket."""

    __slots__ = ("buckets", "total")

    def __init__(self, size: int) -> None:
        self.total = 0.0
        self.buckets = [0] * size

    def add(self, bounds: list[float], seconds: float) -> None:
        self.total += seconds
        self.buckets[bisect.bisect_left(bounds, seconds)] += 1

    def into(self, child: Any) -> None:
        # Histogram.observe() takes one sample at a time; its children's values are the way to add many.
        child._sum.inc(self.total)
        for index, count in enumerate(self.buckets):
            if count:
                child._buckets[index].inc(count)


def _flush_gateway() -> None:
    """The pending requests added up by label set first, then one sample update per label set: a sample
    costs microseconds in multiprocess mode, and one update per request and metric made the flush 46 µs a
    request (92 ms of each second at 2,000 requests/s, holding the GIL against the event loop: the
    gateway's latency tail); by label set, 0.9 µs a request at 2,000 pending (measured, this flush)."""
    pending = _gateway_pending
    requests: collections.Counter[tuple[str, str, str, int]] = collections.Counter()
    errors: collections.Counter[tuple[str, str]] = collections.Counter()
    tokens: collections.Counter[tuple[str, str, str]] = collections.Counter()
    latency: dict[tuple[str, str], _Observed] = {}
    first_bytes: dict[tuple[str, str], _Observed] = {}
    bounds = GATEWAY_LATENCY._upper_bounds  # both histograms have the same buckets
    for _ in range(len(pending)):
        route, model, upstream, status, seconds, first_byte, tokens_in, tokens_out, failed = pending.popleft()
        requests[(route, model, upstream, status)] += 1
        if model == "-":
            continue
        labels = (model, upstream)
        if failed:
            errors[labels] += 1
        observed = latency.get(labels)
        if observed is None:
            observed = latency[labels] = _Observed(len(bounds))
        observed.add(bounds, seconds)
        if first_byte is not None:
            observed = first_bytes.get(labels)
            if observed is None:
                observed = first_bytes[labels] = _Observed(len(bounds))
            observed.add(bounds, first_byte)
        if tokens_in:
            tokens[(model, upstream, "in")] += tokens_in
        if tokens_out:
            tokens[(model, upstream, "out")] += tokens_out
    for (route, model, upstream, status), count in requests.items():
        GATEWAY_REQUESTS.labels(route, model, upstream, str(status)).inc(count)
    for labels, count in errors.items():
        GATEWAY_ERRORS.labels(*labels).inc(count)
    for labels, observed in latency.items():
        observed.into(GATEWAY_LATENCY.labels(*labels))
    for labels, observed in first_bytes.items():
        observed.into(GATEWAY_FIRST_BYTE.labels(*labels))
    for token_labels, count in tokens.items():
        GATEWAY_TOKENS.labels(*token_labels).inc(count)
