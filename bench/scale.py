"""Catalog scale: at 1k, 10k, 100k models, how long modeldex takes to start, how much memory it holds, and
how soon a change is served.

A change is one model added through the admin API, timed from sending the write until a fresh connection
gets the new model, while the write is still under way. Twice: served by the server that wrote it (it
reloads before answering the write), and served by another server process on the same catalog, which
notices by polling the catalog version, as every other worker or replica does.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from modeldex_server import create_key, make_catalog, model_id, start_modeldex
from procs import http_status

POLL_SECONDS = 0.005
CHANGE_TIMEOUT = 60.0


@dataclass
class ScaleResult:
    models: int
    apply_s: float = 0.0  # loading the catalog file into a new database: not a bar, shown for context
    startup_s: list[float] = field(default_factory=list)
    rss_started_mb: list[float] = field(default_factory=list)
    rss_listed_mb: list[float] = field(default_factory=list)
    largest_process_mb: list[float] = field(default_factory=list)
    list_bytes: int = 0
    same_server_change_s: list[float] = field(default_factory=list)
    other_server_change_s: list[float] = field(default_factory=list)


def add_model(base: str, admin_key: str, new_id: str) -> None:
    response = httpx.post(f"{base}/v1/admin/models", json={"id": new_id, "owned_by": "bench"},
                          headers={"Authorization": f"Bearer {admin_key}"}, timeout=CHANGE_TIMEOUT)
    if response.status_code not in (200, 201):
        raise RuntimeError(f"POST /v1/admin/models answered {response.status_code}: {response.text[:200]}")


def wait_served(url: str, headers: dict[str, str], since: float, write: Future[None]) -> float:
    """Seconds from `since` until `url` answers 200 on a fresh connection; stops early if the write failed."""
    while time.perf_counter() < since + CHANGE_TIMEOUT:
        if http_status(url, headers) == 200:
            return time.perf_counter() - since
        if write.done() and write.exception() is not None:
            raise RuntimeError(f"the change was not made: {write.exception()}")
        time.sleep(POLL_SECONDS)
    raise RuntimeError(f"{url} still not served {CHANGE_TIMEOUT:.0f}s after the change")


def change_served(writer: str, reader: str, admin_key: str, headers: dict[str, str], new_id: str) -> float:
    """Add `new_id` through `writer`'s admin API; seconds until `reader` serves it."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        started = time.perf_counter()
        write = pool.submit(add_model, writer, admin_key, new_id)
        served = wait_served(f"{reader}/v1/models/{new_id}", headers, started, write)
        write.result()
    return served


def measure_scale(models: int, directory: Path, repeat: int) -> ScaleResult:
    """Fresh database of `models` models; `repeat` cold starts, each followed by one change of each kind."""
    result = ScaleResult(models)
    started = time.perf_counter()
    url = make_catalog(directory, models)
    result.apply_s = time.perf_counter() - started
    headers = {"Authorization": f"Bearer {create_key(url, 'bench-read')}"}
    admin_key = create_key(url, "bench-admin", scope="admin")
    probe = f"/v1/models/{model_id(models // 2)}"
    for attempt in range(repeat):
        server, base, startup = start_modeldex(url, 1, directory, probe, headers)
        with server:
            result.startup_s.append(startup)
            result.rss_started_mb.append(server.rss_mb())
            listed = httpx.get(f"{base}/v1/models", headers=headers, timeout=60)
            listed.raise_for_status()
            result.list_bytes = result.list_bytes or len(listed.content)  # before any change adds to it
            result.rss_listed_mb.append(server.rss_mb())
            result.largest_process_mb.append(server.largest_rss_mb())
            result.same_server_change_s.append(
                change_served(base, base, admin_key, headers, f"bench/change-same-{attempt}"))
            other, other_base, _ = start_modeldex(url, 1, directory)
            with other:
                result.other_server_change_s.append(
                    change_served(other_base, base, admin_key, headers, f"bench/change-other-{attempt}"))
    return result
