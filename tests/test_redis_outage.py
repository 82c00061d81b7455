"""Rate limits in Redis, with Redis killed or frozen (SIGSTOP) under a running server: every request still
gets its normal answer (200, 201, 401, 429; never a 5xx) without waiting on Redis, limits are counted in the
worker's memory meanwhile, `/readyz` and `/metrics` say so, the log says it once, and all is shared again
once Redis is back."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modeldex.catalog.seed import seed_models
from modeldex.catalog.service import Catalog
from modeldex.store import open_store

from .conftest import report, run_cli, wait_until
from .redis_server import PrivateRedis

pytestmark = pytest.mark.redis
BOUND_S = 1.0  # a correctness bound (no request waits on Redis for seconds), not a speed figure
METRICS_TOKEN = "scrape-redis-outage-0123"
DEGRADED, RECOVERED = "rate limits degraded", "rate limits recovered"


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A Redis of this test's own, since it is killed and frozen."""
    server = PrivateRedis()
    yield server
    server.destroy()


def make_keys(db_url: str) -> dict[str, str]:
    store = open_store(db_url, seed=seed_models())
    try:
        catalog = Catalog(store, actor="test-setup")
        return {name: catalog.create_key(name, scope, None, limit)[1] for name, scope, limit in (
            ("reader", "read", "1000/m"), ("tight", "read", "3/m"), ("free", "read", "unlimited"),
            ("ops", "admin", None))}
    finally:
        store.close()


class Outage:
    """The server under test, and the requests each phase sends it: (what, status, seconds) per request."""

    def __init__(self, server, keys: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
        self.server = server
        self.keys = keys
        self.http = httpx.Client(base_url=server.base_url, timeout=30)
        self.rounds = 0

    def send(self, method: str, path: str, key: str | None, address: str, **kwargs) -> tuple[int, float]:
        headers = {"X-Forwarded-For": address}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        started = time.perf_counter()
        response = self.http.request(method, path, headers=headers, **kwargs)
        return response.status_code, time.perf_counter() - started

    def round(self, phase: str) -> list[tuple[str, int, float]]:
        """Reads (limited, tight, unlimited), admin writes, a bad key from an address that then reads,
        and a key-guessing address that is blocked after 5 failures."""
        keys, results = self.keys, []

        def note(what: str, outcome: tuple[int, float]) -> None:
            results.append((what, *outcome))

        tag = uuid.uuid4().hex[:6]
        self.rounds += 1
        for _ in range(5):
            note("limited read", self.send("GET", "/v1/models", keys["reader"], "198.51.100.1"))
        for _ in range(3):
            note("unlimited read", self.send("GET", "/v1/models/MiniMax-M3", keys["free"], "198.51.100.2"))
        for _ in range(5):
            note("tight read", self.send("GET", "/v1/models", keys["tight"], "198.51.100.3"))
        for n in range(3):
            note("admin write", self.send("POST", "/v1/admin/models", keys["ops"], "198.51.100.4",
                                          json={"id": f"outage-{phase}-{tag}-{n}"}))
        suspect = f"203.0.113.{self.rounds}"  # one bad key, then good ones from the same address
        note("bad key", self.send("GET", "/v1/models", "sk-mdx-" + "B" * 52, suspect))
        note("limited read after a bad key", self.send("GET", "/v1/models", keys["reader"], suspect))
        note("unlimited read after a bad key", self.send("GET", "/v1/models", keys["free"], suspect))
        guesser = f"192.0.2.{self.rounds}"
        for _ in range(7):
            note("guessing", self.send("GET", "/v1/models", "sk-mdx-" + "G" * 52, guesser))
        return results

    def readyz(self) -> dict:
        started = time.perf_counter()
        response = self.http.get("/readyz")
        seconds = time.perf_counter() - started
        status = response.status_code
        assert status == 200 and seconds < BOUND_S, (status, seconds, response.text)
        return response.json()

    def metrics(self) -> dict[str, float]:
        text = self.http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line and not line.startswith("#")}


def check_round(results: list[tuple[str, int, float]], phase: str) -> None:
    """Each request answered as it would be with Redis up, within the bound."""
    by_what: dict[str, list[int]] = {}
    for what, status, _seconds in results:
        by_what.setdefault(what, []).append(status)
    failures = [r for r in results if r[1] >= 500]
    slow = [r for r in results if r[2] >= BOUND_S]
    summary = f"{phase}: {len(failures)}/{len(results)} 5xx, {len(slow)} over {BOUND_S}s, statuses {by_what}"
    assert not failures and not slow, summary
    assert by_what["limited read"] == [200] * 5, summary
    assert by_what["unlimited read"] == [200] * 3, summary
    assert set(by_what["tight read"]) <= {200, 429} and 429 in by_what["tight read"], summary  # still limited
    assert by_what["admin write"] == [201] * 3, summary
    assert by_what["bad key"] == [401], summary
    assert by_what["limited read after a bad key"] == [200], summary
    assert by_what["unlimited read after a bad key"] == [200], summary
    assert by_what["guessing"] == [401] * 5 + [429] * 2, summary
    slowest = max(seconds for _what, _status, seconds in results)
    report(f"redis {phase}: {len(results)} requests, 0 5xx, slowest {slowest * 1000:.0f} ms")


def test_a_redis_outage_degrades_limits_to_each_process(sqlite_url: str, start_server,
                                                        private_redis: PrivateRedis, tmp_path: Path) -> None:
    keys = make_keys(sqlite_url)
    server = start_server(sqlite_url, "--redis-url", private_redis.url, "--rate-limit", "1000/m",
                          "--auth-failure-limit", "5/m", "--forwarded-allow-ips", "127.0.0.1",
                          "--metrics-token", METRICS_TOKEN)
    outage = Outage(server, keys)

    check_round(outage.round("up"), "up")
    assert outage.readyz()["rate_limits"] == {"store": "redis", "status": "ok"}
    assert outage.metrics()["modeldex_ratelimit_degraded"] == 0

    private_redis.freeze()
    try:
        check_round(outage.round("frozen"), "frozen")
        ready = outage.readyz()
        assert ready["status"] == "ready" and ready["rate_limits"]["status"] == "degraded", ready
        assert "Redis" in ready["rate_limits"]["message"]
        assert str(private_redis.port) not in ready["rate_limits"]["message"]  # the address is for the log
        assert f"127.0.0.1:{private_redis.port}" in server.log()
        samples = outage.metrics()
        assert samples["modeldex_ratelimit_degraded"] == 1
        assert samples["modeldex_ratelimit_fallbacks_total"] >= 20
        assert server.log().count(DEGRADED) == 1 and RECOVERED not in server.log()
    finally:
        private_redis.thaw()

    # Back: the breaker tries Redis again within its cooldown (2 s); /readyz asks it too.
    assert wait_until(lambda: outage.readyz()["rate_limits"]["status"] == "ok", 5) is not None
    check_round(outage.round("thawed"), "thawed")
    assert outage.metrics()["modeldex_ratelimit_degraded"] == 0
    assert server.log().count(RECOVERED) == 1 and server.log().count(DEGRADED) == 1

    private_redis.kill()
    check_round(outage.round("killed"), "killed")
    assert outage.readyz()["rate_limits"]["status"] == "degraded"
    assert outage.metrics()["modeldex_ratelimit_degraded"] == 1
    assert server.log().count(DEGRADED) == 2

    private_redis.start()
    assert wait_until(lambda: outage.readyz()["rate_limits"]["status"] == "ok", 5) is not None
    check_round(outage.round("restarted"), "restarted")
    assert outage.metrics()["modeldex_ratelimit_degraded"] == 0
    log = server.log()
    assert log.count(DEGRADED) == 2 and log.count(RECOVERED) == 2
    assert "Traceback" not in log
    for secret in keys.values():
        assert secret not in log


@pytest.mark.parametrize("url", ["foo://:s3cret@127.0.0.1/0", "redis://:s3cret@127.0.0.1:99999/0"])
def test_serve_refuses_a_redis_url_it_cannot_use(sqlite_url: str, url: str) -> None:
    result = run_cli(sqlite_url, "serve", "--port", "0", "--redis-url", url, check=False)
    assert result.returncode == 2 and "Invalid value for '--redis-url'" in result.stderr, result.stderr
    assert "s3cret" not in result.stderr and "Traceback" not in result.stderr
