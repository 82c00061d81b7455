"""How long a change takes to reach every replica, on an idle machine and under load (issue 14).

Three replicas (`modeldex serve --no-access-log`, one worker each) on one database, as in
tests/test_replicas.py: a model is created through one replica (in turn), and the time is taken until all
three serve it. Idle first; then again while `wrk` drives `GET /v1/models` on every replica at once (one
wrk per replica, `--connections` each), which keeps every core busy. PostgreSQL is a private cluster
(tests/postgres.py), or MODELDEX_TEST_POSTGRES_URL.

    .venv/bin/python bench/propagation.py [--changes 20] [--backend postgresql|sqlite|both] [--connections 8]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import postgres  # noqa: E402  (the repository's test helpers: servers, a private PostgreSQL)
from tests.conftest import Server, create_key, upgrade_database  # noqa: E402


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure(replicas: list[Server], admin: str, changes: int, label: str) -> list[float]:
    timings = []
    for n in range(changes):
        model_id = f"propagation/{label}-{n}"
        started = time.monotonic()
        writer = replicas[n % len(replicas)]
        response = writer.http.post(writer.base_url + "/v1/admin/models", json={"id": model_id},
                                    headers={"Authorization": f"Bearer {admin}"})
        assert response.status_code == 201, response.text
        pending = set(range(len(replicas)))
        while pending and time.monotonic() - started < 10:
            for index in list(pending):
                if replicas[index].get(f"/v1/models/{model_id}", admin).status_code == 200:
                    pending.discard(index)
        assert not pending, f"{model_id} not served by replicas {pending} within 10 s"
        timings.append(time.monotonic() - started)
        time.sleep(0.05)
    return timings


def start_load(replicas: list[Server], key: str, connections: int) -> list[subprocess.Popen[str]]:
    return [subprocess.Popen(["wrk", "-t1", f"-c{connections}", "-d600s", "-H", f"Authorization: Bearer {key}",
                              f"{replica.base_url}/v1/models"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True) for replica in replicas]


def stop_load(load: list[subprocess.Popen[str]]) -> float:
    """Stop the wrk runs; their requests per second, added up."""
    total = 0.0
    for process in load:
        process.send_signal(signal.SIGINT)  # wrk prints its summary on SIGINT
        output, _ = process.communicate(timeout=30)
        found = re.search(r"Requests/sec:\s+([\d.]+)", output)
        total += float(found.group(1)) if found else 0.0
    return total


def summary(timings: list[float]) -> str:
    return (f"p50 {statistics.median(timings) * 1000:.0f} ms, p99 {percentile(timings, 0.99) * 1000:.0f} ms, "
            f"max {max(timings) * 1000:.0f} ms")


def run(backend: str, changes: int, connections: int, tmp: Path) -> None:
    cluster = None
    if backend == "sqlite":
        db_url = f"sqlite:///{tmp}/propagation.db"
    else:
        admin_url = os.environ.get(postgres.TEST_URL_ENV)
        if not admin_url:
            cluster = postgres.PrivatePostgres()
            admin_url = cluster.admin_url
        db_url = postgres.create_database(admin_url)
        upgrade_database(db_url)
    print(f"{backend}: load average before the run {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    admin = create_key(db_url, "admin", "admin")
    reader = create_key(db_url, "reader", "read")
    replicas = [Server(db_url, tmp / f"{backend}-replica-{i}.log", "--no-access-log") for i in range(3)]
    try:
        idle = measure(replicas, admin, changes, "idle")
        load = start_load(replicas, reader, connections)
        time.sleep(1)  # let the load settle
        busy = measure(replicas, admin, changes, "busy")
        rate = stop_load(load)
        print(f"{backend}: idle: {summary(idle)}; under load ({rate:,.0f} requests/s of GET /v1/models "
              f"over 3 replicas, {connections} connections each): {summary(busy)}; {changes} changes each",
              flush=True)
    finally:
        for replica in replicas:
            replica.stop()
        if cluster is not None:
            cluster.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--backend", choices=["postgresql", "sqlite", "both"], default="both")
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modeldex-propagation-") as tmp:
        for backend in (["postgresql", "sqlite"] if args.backend == "both" else [args.backend]):
            run(backend, args.changes, args.connections, Path(tmp))


if __name__ == "__main__":
    main()
