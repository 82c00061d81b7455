"""A scrape of /metrics while the database hangs (ops/metrics.py, in-process): it answers within about a
second with the upstream health last read (docs/operations.md), and holds one reader thread, not one per
scrape."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from modeldex.ops import metrics


def test_a_scrape_while_the_store_hangs_gets_the_health_last_read(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    reads: list[float] = []

    def read() -> dict[str, Any]:
        reads.append(time.monotonic())
        if len(reads) > 1:
            release.wait(30)  # the database stops answering after the first read
        return {"hung-up": SimpleNamespace(status="ok", model_count=3, last_success_at=1.0, latency_ms=5.0)}

    # As the app registers it (api/app.py): a collector made by the registering function.
    monkeypatch.setitem(metrics._extra, "test-upstreams",
                        lambda registry: registry.register(metrics.UpstreamCollector(read)))
    try:
        assert 'modeldex_upstream_models{upstream="hung-up"} 3.0' in metrics.exposition().decode()
        threads = threading.active_count()
        for _ in range(3):
            started = time.monotonic()
            text = metrics.exposition().decode()
            assert time.monotonic() - started < 3
            # Was: no modeldex_upstream_* series at all, each scrape making a new collector with nothing read.
            assert 'modeldex_upstream_models{upstream="hung-up"} 3.0' in text
        assert len(reads) == 2  # one read still waiting on the database, not one more per scrape
        assert threading.active_count() <= threads + 1
    finally:
        release.set()
