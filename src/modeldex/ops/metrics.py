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

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

REQUESTS = Counter("modeldex_requests", "HTTP requests answered, by route and status.", ["route", "status"])
LATENCY = Histogram(
    "modeldex_request_duration_seconds", "Time to answer a request, by route.", ["route"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
RATE_LIMITED = Counter("modeldex_rate_limited", "Requests refused with 429, by reason.", ["reason"])
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
    request only appends its route, status and duration (~0.1 µs; counting under a lock was 0.67 µs,
    measured); the flush tallies them, and a scrape is at most a second behind (and never behind for the
    worker that answers it: it flushes first).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # one flusher at a time
        self._bounds = LATENCY._upper_bounds  # the histogram's own buckets, +Inf last
        self._pending: collections.deque[tuple[str, int, float]] = collections.deque()

    def observe(self, route: str, status: int, seconds: float) -> None:
        self._pending.append((route, status, seconds))  # atomic: no lock on the request path

    def flush(self) -> None:
        with self._lock:
            pending, bounds = self._pending, self._bounds
            counts: collections.Counter[tuple[str, int]] = collections.Counter()
            buckets: dict[str, list[int]] = {}
            sums: dict[str, float] = collections.defaultdict(float)
            for _ in range(len(pending)):
                route, status, seconds = pending.popleft()
                counts[(route, status)] += 1
                sums[route] += seconds
                per_bucket = buckets.get(route)
                if per_bucket is None:
                    per_bucket = buckets[route] = [0] * len(bounds)
                per_bucket[bisect.bisect_left(bounds, seconds)] += 1
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
flush = _tallies.flush


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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
        if match and not _alive(int(match.group(1))):
            multiprocess.mark_process_dead(int(match.group(1)), path)  # type: ignore[no-untyped-call]


class DeadWorkerSweeper:
    """A collector that yields nothing, registered first: dead workers' gauges are gone before the others
    are read (for a registry not collected through `exposition`, such as --metrics-port's)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        forget_dead_workers()
        return iter(())


def exposition() -> bytes:
    """The text a scrape gets: all workers' samples when in multiprocess mode, this process's otherwise."""
    flush()
    extra = CollectorRegistry()  # made anew per scrape, so scrape-time collectors register once each
    for register in _extra.values():
        register(extra)
    if os.environ.get(MULTIPROC_ENV):
        forget_dead_workers()
        multiprocess.MultiProcessCollector(extra)  # type: ignore[no-untyped-call]
        return generate_latest(extra)
    from prometheus_client import REGISTRY  # one process (in-process tests): its own samples

    return generate_latest(REGISTRY) + generate_latest(extra)
