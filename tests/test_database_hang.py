"""A PostgreSQL that hangs (frozen, not gone: connections open, nothing answers) costs a bounded wait:
writes, admin reads and DELETE answer 503 within the database timeout, /readyz says so, /metrics and the
Models reads answer at once, and everything resumes when the database thaws."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from . import postgres
from .conftest import Server, create_key, report, run_cli, upgrade_database, wait_until

TIMEOUT_S = 1  # the server's --database-timeout in this test
BOUND_S = 8  # generous: a stale pooled connection's ping, then a new connection (libpq's 2 s minimum)


def cluster_processes(cluster: postgres.PrivatePostgres) -> list[int]:
    """The postmaster and every process it started."""
    postmaster = int((cluster.datadir / "postmaster.pid").read_text().split()[0])
    found = [postmaster]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    found.append(int(entry.name))
    return found


@contextlib.contextmanager
def frozen(cluster: postgres.PrivatePostgres) -> Iterator[None]:
    # The postmaster first, so that it starts no backend after its children are listed; then the children
    # (one that ended since it was listed, a closed session, needs no stopping).
    pids = cluster_processes(cluster)[:1]
    os.kill(pids[0], signal.SIGSTOP)
    pids += cluster_processes(cluster)[1:]
    for pid in pids[1:]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def timed(call) -> tuple[httpx.Response, float]:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


@pytest.mark.postgres
def test_a_frozen_database_answers_503_within_the_timeout(tmp_path: Path) -> None:
    cluster = postgres.PrivatePostgres()
    server: Server | None = None
    try:
        db_url = postgres.create_database(cluster.admin_url)
        upgrade_database(db_url)
        admin = create_key(db_url, "admin", "admin")
        server = Server(db_url, tmp_path / "server.log", "--database-timeout", str(TIMEOUT_S))
        http = httpx.Client(base_url=server.base_url, timeout=30, headers={"Authorization": f"Bearer {admin}"})
        assert http.post("/v1/admin/models", json={"id": "before/freeze"}).status_code == 201
        assert http.get("/metrics").status_code == 200
        # A session that holds the catalog's write lock and hangs (a stuck client, a frozen backend):
        # writes wait for the lock at most the timeout, then 503; reads carry on.
        with psycopg.connect(db_url) as holder:
            holder.execute("UPDATE catalog_state SET version = version")
            locked, locked_took = timed(lambda: http.post("/v1/admin/models", json={"id": "while/locked"}))
            assert locked.status_code == 503 and locked_took < BOUND_S, (locked.text, locked_took)
            assert http.get("/v1/models/MiniMax-M3").status_code == 200
            holder.rollback()
        with frozen(cluster):
            answers = {
                "write": timed(lambda: http.post("/v1/admin/models", json={"id": "during/freeze"})),
                "admin read": timed(lambda: http.get("/v1/admin/models")),
                "delete": timed(lambda: http.delete("/v1/models/MiniMax-M2")),
            }
            for what, (response, took) in answers.items():
                assert response.status_code == 503, (what, response.text)
                assert response.json()["error"]["code"] == "database_unavailable", what
                assert took < BOUND_S, (what, took)
            assert wait_until(lambda: http.get("/readyz").status_code == 503, BOUND_S) is not None
            assert "not ready" in http.get("/readyz").json()["error"]["message"]
            metrics, metrics_took = timed(lambda: http.get("/metrics"))
            assert metrics.status_code == 200 and metrics_took < 3, metrics_took
            assert "modeldex_store_up 0.0" in metrics.text
            models, models_took = timed(lambda: http.get("/v1/models"))
            assert models.status_code == 200 and "before/freeze" in models.text and models_took < 2
        assert wait_until(lambda: http.get("/readyz").status_code == 200, 15) is not None
        assert http.post("/v1/admin/models", json={"id": "after/thaw"}).status_code == 201
        ids = {m["id"] for m in http.get("/v1/admin/models").json()["data"]}
        assert {"before/freeze", "after/thaw", "MiniMax-M2"} <= ids and not {"during/freeze", "while/locked"} & ids
        report(f"locked catalog: write 503 in {locked_took:.1f} s; frozen PostgreSQL (--database-timeout 1): " + ", ".join(
            f"{what} 503 in {took:.1f} s" for what, (_, took) in answers.items()) + f", /metrics in {metrics_took:.2f} s")
        http.close()
    finally:
        if server is not None:
            server.stop()
        cluster.destroy()


def test_schema_commands_give_up_on_a_server_that_never_answers() -> None:
    """`db current` and `db upgrade` let statements run for an hour (a migration may rewrite a big table),
    but connecting to a server that accepts and then says nothing (a hung PostgreSQL, a black-holing proxy)
    ends like every other command's: an error in seconds, not an hour's wait."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel accepts connections; nothing ever answers on them
        url = f"postgresql://modeldex@127.0.0.1:{silent.getsockname()[1]}/catalog"
        for command in (("db", "current"), ("db", "upgrade")):
            started = time.monotonic()
            result = run_cli(url, *command, check=False)
            took = time.monotonic() - started
            assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
            assert result.stderr == "Error: database error: connection timeout expired\n", command
            assert took < 30, (command, took)  # 5 s to connect, then give up: not the hour statements get
