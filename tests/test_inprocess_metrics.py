"""The per-worker request tallies (ops/metrics.py), in-process: what a flush adds to the Prometheus samples
is what one `Histogram.observe()` and one `Counter.inc()` per request would have added.

Each test flushes tallies of its own: the module's (`metrics.observe`, `metrics.flush`) are also flushed every
second by the thread `metrics.start_flushing()` starts, which any app started in this test process has started
(tests/inprocess.py), and a flush of it in the middle of a test would take its durations."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Histogram

from modeldex.ops import metrics


def test_a_flush_adds_what_one_sample_per_request_would() -> None:
    route = "tally-test"
    bounds = list(metrics.LATENCY._upper_bounds)
    # Every bound exactly (a duration equal to a bound belongs to that bucket), just past each, and a spread.
    spread = random.Random(7)
    durations = [*bounds[:-1], *(b * 1.0001 for b in bounds[:-1]), 10.0]
    durations += [spread.expovariate(1 / 0.003) for _ in range(500)]
    reference = Histogram("reference", "one observe() per request", buckets=bounds[:-1],
                          registry=CollectorRegistry())
    for seconds in durations:
        reference.observe(seconds)
    latency = metrics.LATENCY.labels(route)
    ok, missing = metrics.REQUESTS.labels(route, "200"), metrics.REQUESTS.labels(route, "404")
    before = ([b.get() for b in latency._buckets], latency._sum.get(), ok._value.get(), missing._value.get())
    tallies = metrics._Tallies()

    for index, seconds in enumerate(durations):
        tallies.observe(route, 404 if index % 10 == 0 else 200, seconds)
    tallies.flush()
    tallies.flush()  # nothing left: a second flush adds nothing

    added = [b.get() - was for b, was in zip(latency._buckets, before[0], strict=True)]
    assert added == [b.get() for b in reference._buckets]
    assert latency._sum.get() - before[1] == pytest.approx(sum(durations))
    assert missing._value.get() - before[3] == len(range(0, len(durations), 10))
    assert ok._value.get() - before[2] + missing._value.get() - before[3] == len(durations)


def test_a_duration_recorded_during_a_flush_waits_for_the_next() -> None:
    """The flusher takes the first n durations and deletes those n: one appended in between is kept."""
    route = "tally-race"
    counter = metrics.REQUESTS.labels(route, "200")
    before = counter._value.get()
    tallies = metrics._Tallies()
    tallies.observe(route, 200, 0.001)
    durations = tallies._durations[(route, 200)]

    class Interleaved(list[float]):  # a request's append lands between the take and the delete
        def __getitem__(self, index):  # type: ignore[no-untyped-def]
            taken = super().__getitem__(index)
            self.append(0.002)
            return taken

    tallies._durations[(route, 200)] = Interleaved(durations)
    tallies.flush()
    assert counter._value.get() - before == 1
    assert list(tallies._durations[(route, 200)]) == [0.002]
    tallies.flush()
    assert counter._value.get() - before == 2
