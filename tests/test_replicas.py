"""Several replicas on one database agree within a second, lose no write, and survive the database
going away."""

from __future__ import annotations

import concurrent.futures
import statistics
import threading
import time
from pathlib import Path

import httpx
import pytest

from . import postgres
from .conftest import Server, create_key, new_database, report, run_cli, upgrade_database, wait_until

BOUND = 1.0


def start_replicas(db_url: str, tmp_path: Path, count: int = 3) -> list[Server]:
    return [Server(db_url, tmp_path / f"replica-{i}.log", "--no-access-log") for i in range(count)]


def stop_all(servers: list[Server]) -> None:
    for server in servers:
        server.stop()


def admin_call(server: Server, key: str, method: str, path: str, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
    return server.http.request(method, server.base_url + path, headers=headers, **kwargs)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_changes_reach_every_replica_within_a_second(backend: str, tmp_path: Path,
                                                     request: pytest.FixtureRequest) -> None:
    db_url = new_database(backend, tmp_path, request)
    admin = create_key(db_url, "admin", "admin")
    replicas = start_replicas(db_url, tmp_path)
    try:
        timings = []
        for n in range(20):
            model_id = f"replicated/model-{n}"
            started = time.monotonic()
            assert admin_call(replicas[n % 3], admin, "POST", "/v1/admin/models", json={"id": model_id}).status_code == 201
            pending = set(range(3))
            while pending and time.monotonic() - started < 5:
                for index in list(pending):
                    if replicas[index].get(f"/v1/models/{model_id}", admin).status_code == 200:
                        pending.discard(index)
            timings.append(time.monotonic() - started)
            assert not pending, f"{model_id} not served by replicas {pending}"
        p50, p99 = statistics.median(timings), percentile(timings, 0.99)
        report(f"propagation to 3 replicas on {backend}: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
               f"max {max(timings) * 1000:.0f} ms over {len(timings)} changes (bound 1000 ms)")
        assert max(timings) < BOUND

        # A revocation made with the CLI (no replica involved) reaches them all too.
        doomed = run_cli(db_url, "keys", "create", "doomed").stdout.strip()
        assert all(wait_until(lambda r=r: r.get("/v1/models", doomed).status_code == 200, BOUND) is not None
                   for r in replicas)
        started = time.monotonic()
        run_cli(db_url, "keys", "revoke", "doomed")
        assert all(wait_until(lambda r=r: r.get("/v1/models", doomed).status_code == 401, BOUND) is not None
                   for r in replicas)
    finally:
        stop_all(replicas)


@pytest.mark.postgres
def test_concurrent_writes_through_several_replicas_lose_nothing(tmp_path: Path,
                                                                 request: pytest.FixtureRequest) -> None:
    db_url = new_database("postgresql", tmp_path, request)
    admin = create_key(db_url, "admin", "admin")
    replicas = start_replicas(db_url, tmp_path)
    try:
        assert admin_call(replicas[0], admin, "POST", "/v1/admin/models",
                          json={"id": "shared", "context_length": 999_999}).status_code == 201
        since = admin_call(replicas[0], admin, "GET", "/v1/admin/changes").json()["version"]

        def writer(n: int) -> tuple[list[int], int]:
            accepted, stale = [], 0
            replica = replicas[n % 3]
            for attempt in range(5):
                current = admin_call(replica, admin, "GET", "/v1/admin/models/shared")
                value = 1000 * (n + 1) + attempt
                response = admin_call(replica, admin, "PATCH", "/v1/admin/models/shared",
                                      json={"context_length": value}, headers={"If-Match": current.headers["etag"]})
                if response.status_code == 200:
                    accepted.append(value)
                else:
                    assert response.status_code == 412, response.text
                    stale += 1
            # Plus writes that never conflict: each must survive.
            for attempt in range(3):
                response = admin_call(replica, admin, "POST", "/v1/admin/models", json={"id": f"w{n}/m{attempt}"})
                assert response.status_code == 201, response.text
            return accepted, stale

        with concurrent.futures.ThreadPoolExecutor(9) as pool:
            results = list(pool.map(writer, range(9)))
        accepted = [v for values, _ in results for v in values]
        assert len(accepted) + sum(s for _, s in results) == 45
        feed = admin_call(replicas[1], admin, "GET", f"/v1/admin/changes?since={since}&limit=10000").json()["data"]
        updates = [c["after"]["context_length"] for c in feed if c["id"] == "shared"]
        assert sorted(updates) == sorted(accepted)
        created = {c["id"] for c in feed if c["op"] == "create"}
        assert created == {f"w{n}/m{a}" for n in range(9) for a in range(3)}
        for replica in replicas:
            assert wait_until(lambda r=replica: {f"w{n}/m{a}" for n in range(9) for a in range(3)} <= {
                m["id"] for m in r.get("/v1/models", admin).json()["data"]}, BOUND) is not None
    finally:
        stop_all(replicas)


@pytest.mark.postgres
def test_the_database_going_away(tmp_path: Path) -> None:
    """Stop the database under live traffic, start it again: reads never fail, no acknowledged write is
    lost, writes in between get 503, readiness says why, and every replica catches up by itself."""
    cluster = postgres.PrivatePostgres()
    replicas: list[Server] = []
    try:
        db_url = postgres.create_database(cluster.admin_url)
        upgrade_database(db_url)
        admin = create_key(db_url, "admin", "admin")
        replicas = start_replicas(db_url, tmp_path, count=2)
        stop = threading.Event()
        read_statuses: list[int] = []
        acknowledged: list[str] = []
        write_statuses: list[int] = []

        def read_traffic(replica: Server) -> None:
            while not stop.is_set():
                for path in ("/v1/models", "/v1/models/MiniMax-M3"):
                    read_statuses.append(replica.get(path, admin).status_code)
                time.sleep(0.005)

        def write_traffic() -> None:
            n = 0
            while not stop.is_set():
                model_id = f"outage/model-{n}"
                n += 1
                try:
                    response = admin_call(replicas[n % 2], admin, "POST", "/v1/admin/models", json={"id": model_id})
                except httpx.HTTPError:
                    continue
                write_statuses.append(response.status_code)
                if response.status_code == 201:
                    acknowledged.append(model_id)
                else:
                    assert response.status_code == 503, response.text
                    assert response.json()["error"]["code"] == "database_unavailable"
                time.sleep(0.02)

        threads = [threading.Thread(target=read_traffic, args=(r,)) for r in replicas]
        threads.append(threading.Thread(target=write_traffic))
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        cluster.stop()
        try:
            assert wait_until(lambda: all(r.get("/readyz").status_code == 503 for r in replicas), 5) is not None
            not_ready = replicas[0].get("/readyz").json()["error"]
            assert not_ready["code"] == "not_ready" and "serving the catalog from memory" in not_ready["message"]
            told_admin = replicas[0].get("/readyz", admin).json()["error"]  # the version only to an admin
            assert told_admin["code"] == "not_ready" and "serving catalog version" in told_admin["message"]
            assert all(r.get("/healthz").status_code == 200 for r in replicas)
            time.sleep(1.5)
        finally:
            cluster.start()
        assert wait_until(lambda: all(r.get("/readyz").status_code == 200 for r in replicas), 15) is not None
        time.sleep(1.0)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

        assert read_statuses and all(status == 200 for status in read_statuses), sorted(set(read_statuses))
        assert 503 in write_statuses, "no write happened while the database was away"
        assert 201 in write_statuses[write_statuses.index(503):], "writes did not resume"
        stored = {m["id"] for m in admin_call(replicas[0], admin, "GET", "/v1/admin/models").json()["data"]}
        assert set(acknowledged) <= stored
        for replica in replicas:
            served = wait_until(lambda r=replica: set(acknowledged) <= {
                m["id"] for m in r.get("/v1/models", admin).json()["data"]}, BOUND)
            assert served is not None
        views = {r.get("/v1/models", admin).content for r in replicas}
        assert len(views) == 1
        report(f"database outage: {len(read_statuses)} reads all 200, {write_statuses.count(201)} writes acknowledged "
               f"and kept, {write_statuses.count(503)} refused with 503 while the database was away")
    finally:
        stop_all(replicas)
        cluster.destroy()
