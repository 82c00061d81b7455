"""Inference outcomes as the admin API shows them (`health.inference`): added up over the server's
workers, each of which writes its own figures to a file in the server's run directory at most once a
second, off the request path (gateway/health.py)."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modeldex.gateway.health import RouteHealth, SharedHealth

from .conftest import Server, cli_env, create_key, run_cli, wait_until
from .fake_upstream import FakeUpstream
from .test_worker_faults import children


def test_workers_figures_are_merged_and_a_gone_workers_are_left_out(tmp_path: Path) -> None:
    ours, theirs, gone = RouteHealth(), RouteHealth(), RouteHealth()
    here = SharedHealth(ours, tmp_path)
    there = SharedHealth(theirs, tmp_path, worker=os.getppid())  # a live process: another worker
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    dead = SharedHealth(gone, tmp_path, worker=int(finished.stdout))  # its process has exited
    ours.succeeded("a")
    theirs.failed("a", "HTTP 502")
    theirs.succeeded("b")
    gone.failed("c", "timeout before the first byte")
    there.write()
    dead.write()
    merged = here.report()
    assert set(merged) == {"a", "b"}, merged  # the exited worker's `c` is not there
    a = merged["a"]
    assert (a["successes"], a["errors"], a["workers"]) == (1, 1, 2), a
    assert a["healthy"] is False and a["failures"] == 1 and a["last_error"] == "HTTP 502", a
    assert merged["b"]["successes"] == 1 and merged["b"]["healthy"] is True
    # Written only when something changed; a stopped worker's file goes.
    written = there.path.stat().st_mtime_ns
    time.sleep(0.01)
    there.write()
    assert there.path.stat().st_mtime_ns == written
    there.stop()
    assert not there.path.exists() and set(here.report()) == {"a"}


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[tuple[Server, FakeUpstream, str, str]]:
    db_url = f"sqlite:///{tmp_path}/catalog.db"
    upstream = FakeUpstream()
    admin, reader = create_key(db_url, "admin", "admin"), create_key(db_url, "reader", "read")
    for args in (("upstreams", "add", "up", "--base-url", upstream.base_url, "--routing-only"),
                 ("models", "add", "m"), ("routes", "add", "m", "up")):
        run_cli(db_url, *args)
    server = Server(db_url, tmp_path / "server.log", "--workers", "2")
    yield server, upstream, admin, reader
    server.stop()
    upstream.close()


def written_errors(server: Server, upstream: str) -> int:
    """The errors of `upstream` the server's workers have written to its run directory (SharedHealth's files,
    one a worker, named by its process id)."""
    total = 0
    for worker in children(server.process.pid):
        for path in glob.glob(f"{tempfile.gettempdir()}/modeldex-metrics-*/inference-health-{worker}.json"):
            with contextlib.suppress(OSError, ValueError):
                total += json.loads(Path(path).read_text()).get(upstream, {}).get("errors", 0)
    return total


def test_the_admin_api_adds_up_every_workers_outcomes(two_workers: tuple[Server, FakeUpstream, str, str]) -> None:
    server, upstream, admin, reader = two_workers
    upstream.chat_mode = "5xx"
    requests = 12
    for _ in range(requests):  # a connection each: the kernel spreads them over the two workers
        with httpx.Client() as client:
            answer = client.post(server.base_url + "/v1/chat/completions", json={"model": "m", "messages": []},
                                 headers={"Authorization": f"Bearer {reader}"})
            assert answer.status_code == 502
    # Every worker writes its figures once a second, from a thread of its own (a loaded machine can delay it):
    # wait until both workers' files in the server's run directory hold all the requests.
    assert wait_until(lambda: written_errors(server, "up") == requests, 15) is not None, written_errors(server, "up")
    for _ in range(4):  # whichever worker answers, it reports all of them
        with httpx.Client() as client:
            inference = client.get(server.base_url + "/v1/admin/upstreams/up",
                                   headers={"Authorization": f"Bearer {admin}"}).json()["health"]["inference"]
        assert inference["errors"] == requests and inference["successes"] == 0, inference
        assert inference["healthy"] is False and inference["last_error"] == "HTTP 502", inference
    # The CLI through the server shows it beside discovery's columns.
    listed = run_cli(server.db_url, "upstreams", "list", "--url", server.base_url,
                     env={**cli_env(server.db_url), "MODELDEX_API_KEY": admin}).stdout.splitlines()
    assert listed[0].split()[-1] == "INFERENCE"
    assert listed[1].endswith(f"0 ok, {requests} failed (resting: HTTP 502)"), listed
