"""Catalog scale: at 1k, 10k, 100k models, how long modeldex takes to start, how much memory it holds, and
how soon a change is served.

A change is made two ways. Through the admin API (the worker that writes reloads before answering), timed
from sending the write until a fresh connection gets the new model. And through the CLI, another process,
which running servers notice by polling the catalog version: timed from the CLI's exit (its commit is
done by then) until served.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from modeldex_server import clean_env, create_key, make_catalog, model_id, modeldex_binary, start_modeldex
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
    api_change_s: list[float] = field(default_factory=list)
    cli_change_s: list[float] = field(default_factory=list)

    @property
    def startup_noise(self) -> float:
        values = self.startup_s
        return (max(values) - min(values)) / statistics.median(values) if len(values) > 1 else 0.0


def wait_served(url: str, headers: dict[str, str], since: float) -> float:
    """Seconds from `since` until `url` answers 200 on a fresh connection."""
    deadline = since + CHANGE_TIMEOUT
    while time.perf_counter() < deadline:
        if http_status(url, headers) == 200:
            return time.perf_counter() - since
        time.sleep(POLL_SECONDS)
    raise RuntimeError(f"{url} still not served {CHANGE_TIMEOUT:.0f}s after the change")


def api_change(base: str, admin_key: str, read_headers: dict[str, str], new_id: str) -> float:
    started = time.perf_counter()
    response = httpx.post(f"{base}/v1/admin/models", json={"id": new_id, "owned_by": "bench"},
                          headers={"Authorization": f"Bearer {admin_key}"}, timeout=60)
    if response.status_code not in (200, 201):
        raise RuntimeError(f"POST /v1/admin/models answered {response.status_code}: {response.text[:200]}")
    return wait_served(f"{base}/v1/models/{new_id}", read_headers, started)


def cli_change(url: str, base: str, read_headers: dict[str, str], new_id: str) -> float:
    subprocess.run([modeldex_binary(), "models", "add", new_id, "--owned-by", "bench", "--database-url", url],
                   check=True, capture_output=True, env=clean_env(), timeout=120)
    return wait_served(f"{base}/v1/models/{new_id}", read_headers, time.perf_counter())


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
            result.list_bytes = len(listed.content)
            result.rss_listed_mb.append(server.rss_mb())
            result.largest_process_mb.append(server.largest_rss_mb())
            result.api_change_s.append(api_change(base, admin_key, headers, f"bench/api-change-{attempt}"))
            result.cli_change_s.append(cli_change(url, base, headers, f"bench/cli-change-{attempt}"))
    return result

