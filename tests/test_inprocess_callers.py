"""Callers in-process: failed attempts counted once per request, per client address, on every route that
takes a key; per-key rate limits and their headers. test_operations.py keeps the real-server versions."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from .inprocess import Harness, bearer, error_of

pytestmark = pytest.mark.anyio

RATE_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests")
WRONG = "sk-mdx-" + "N0tAKeyN0tAKeyN0tAKeyN0tAKeyN0tAKeyN0tAKeyN0tAKey12"
METRICS_TOKEN = "scrape-me-9876543210"


class Limited:
    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.read = harness.key("reader", rate_limit="unlimited")
        self.admin = harness.key("admin", "admin", rate_limit="unlimited")

    async def request(self, method: str, path: str, key: str | None, address: str | None = None,
                      headers: dict[str, str] | None = None) -> httpx.Response:
        return await self.harness.request(method, path, key, address, headers)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Limited]:
    harness = Harness(tmp_path_factory.mktemp("callers"), auth_failure_limit="2/m", rate_limit="100/m",
                      metrics_token=METRICS_TOKEN)
    yield Limited(harness)
    harness.stop()


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/models"),
    ("GET", "/v1/models/MiniMax-M3"),
    ("HEAD", "/v1/models"),
    ("DELETE", "/v1/models/MiniMax-M3"),
    ("GET", "/v1/admin/models"),
    ("POST", "/v1/admin/keys"),
    ("GET", "/metrics"),
])
async def test_a_bad_key_is_one_failed_attempt(limited: Limited, method: str, path: str) -> None:
    # With 2 failures allowed per minute, exactly 2 bad-key requests are 401s: had one request counted
    # twice, the second would already be refused.
    async with limited.harness.client() as client:
        statuses = [(await client.request(method, path, headers=bearer(WRONG))).status_code for _ in range(3)]
    assert statuses == [401, 401, 429]


async def test_failures_add_up_across_routes_per_address(limited: Limited) -> None:
    address = "198.51.100.1"
    assert (await limited.request("GET", "/v1/models", WRONG, address)).status_code == 401
    assert (await limited.request("GET", "/v1/admin/models", WRONG, address)).status_code == 401
    blocked = await limited.request("GET", "/metrics", METRICS_TOKEN + "x", address)
    error = error_of(blocked, 429, "rate_limit_exceeded", type="requests")
    assert "invalid API keys" in error["message"]
    assert 1 <= int(blocked.headers["retry-after"]) <= 60
    assert 1000 <= int(blocked.headers["retry-after-ms"]) <= 60_000
    # A right key from that address waits too: a guess cannot be confirmed while blocked.
    error_of(await limited.request("GET", "/v1/models", limited.read, address), 429, "rate_limit_exceeded",
             type="requests")
    assert (await limited.request("GET", "/v1/models", limited.read, "198.51.100.2")).status_code == 200


async def test_missing_keys_are_no_guesses(limited: Limited) -> None:
    address = "198.51.100.3"
    for _ in range(5):
        error_of(await limited.request("GET", "/v1/models", None, address), 401, None)
    assert (await limited.request("GET", "/v1/models", limited.read, address)).status_code == 200


async def test_a_key_with_a_limit_answers_openai_headers_then_429(limited: Limited) -> None:
    key = limited.harness.key("three-a-minute", rate_limit="3/m")
    async with limited.harness.client() as client:
        responses = [await client.get("/v1/models", headers=bearer(key)) for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert all(r.headers["x-ratelimit-limit-requests"] == "3" for r in responses)
    assert [r.headers["x-ratelimit-remaining-requests"] for r in responses] == ["2", "1", "0", "0"]
    assert responses[0].headers["x-ratelimit-reset-requests"] == "20s"
    error = error_of(responses[3], 429, "rate_limit_exceeded", type="requests")
    assert "three-a-minute" in error["message"] and "try again in" in error["message"]
    assert 15 <= int(responses[3].headers["retry-after"]) <= 20
    assert 15_000 <= int(responses[3].headers["retry-after-ms"]) <= 20_000
    assert len(responses[3].headers.get_list("x-ratelimit-limit-requests")) == 1


async def test_a_new_key_with_a_revoked_keys_name_starts_with_a_full_bucket(limited: Limited) -> None:
    harness = limited.harness
    first = harness.key("once-a-minute", rate_limit="1/m")
    async with harness.client() as client:
        assert [(await client.get("/v1/models", headers=bearer(first))).status_code for _ in range(2)] == [200, 429]
        harness.catalog.revoke_key("once-a-minute")
        again = harness.key("once-a-minute", rate_limit="1/m")
        response = await client.get("/v1/models", headers=bearer(again))
    assert response.status_code == 200, response.text  # not the revoked key's empty bucket
    assert response.headers["x-ratelimit-remaining-requests"] == "0"


async def test_limit_headers_ride_on_every_answer_of_a_limited_key(limited: Limited) -> None:
    key = limited.harness.key("ten-a-minute", rate_limit="10/m")
    admin = limited.harness.key("limited-admin", "admin", rate_limit="10/m")
    first = await limited.request("GET", "/v1/models/MiniMax-M3", key)
    answers = {
        "not modified": await limited.request("GET", "/v1/models/MiniMax-M3", key,
                                              headers={"If-None-Match": first.headers["etag"]}),
        "not found": await limited.request("GET", "/v1/models/ghost", key),
        "forbidden delete": await limited.request("DELETE", "/v1/models/MiniMax-M3", key),
        "admin read": await limited.request("GET", "/v1/admin/models", admin),
    }
    assert [r.status_code for r in answers.values()] == [304, 404, 403, 200]
    for name, response in answers.items():
        assert response.headers.get("x-ratelimit-limit-requests") == "10", name
    # Each answer took one request from the bucket.
    assert answers["forbidden delete"].headers["x-ratelimit-remaining-requests"] == "6"


async def test_limits_are_per_key(limited: Limited) -> None:
    spent = limited.harness.key("spent", rate_limit="1/m")
    fresh = limited.harness.key("fresh", rate_limit="1/m")
    assert (await limited.request("GET", "/v1/models", spent)).status_code == 200
    assert (await limited.request("GET", "/v1/models", spent)).status_code == 429
    assert (await limited.request("GET", "/v1/models", fresh)).status_code == 200


async def test_the_server_default_applies_unless_a_key_has_its_own(limited: Limited) -> None:
    default = limited.harness.key("default-limited")
    response = await limited.request("GET", "/v1/models", default)
    assert response.headers["x-ratelimit-limit-requests"] == "100"
    exempt = await limited.request("GET", "/v1/models", limited.read)
    assert exempt.status_code == 200
    assert not any(name in exempt.headers for name in RATE_HEADERS)


async def test_long_authorization_headers_are_not_remembered(limited: Limited) -> None:
    """Each distinct Authorization header was remembered (its caller, or its refusal) until 10,000 of them:
    headers of up to 16 KB, different every time, held ~300 MB per worker after 2 s of requests from one
    client with no key (blocked after its first failures, and still remembered), or with a read key padded
    with spaces. Only headers as long as a key's are remembered now."""
    import gc
    import tracemalloc

    padded = [f"Bearer {' ' * (8000 + n)}{limited.read}" for n in range(100)]
    made_up = [f"Bearer {n:04d}{'x' * 8000}" for n in range(100)]
    async with limited.harness.client("198.51.100.77") as client:
        await client.get("/v1/models", headers={"Authorization": "Bearer warm-up"})
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            statuses = [(await client.get("/v1/models", headers={"Authorization": header})).status_code
                        for header in padded + made_up]
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    assert set(statuses[:100]) == {200} and set(statuses[100:]) <= {401, 429}
    assert grown < 1_000_000, f"{grown:,} bytes kept after 200 requests with 8 KB headers"


async def test_an_address_flood_does_not_reset_a_keys_limit() -> None:
    """The in-process buckets are bounded; full, they cleared every bucket, so a client failing from enough
    addresses (an IPv6 /64 has plenty) got its own key's used-up limit back. Now buckets full again go first,
    then addresses' failed attempts; a key's bucket in use stays."""
    from modeldex.catalog.limits import parse_limit
    from modeldex.ops.ratelimit import ADDRESS_BUCKET, MemoryBuckets

    buckets = MemoryBuckets(max_buckets=10)
    key_limit, failures = parse_limit("2/m"), parse_limit("30/m")
    assert key_limit is not None and failures is not None
    assert [(await buckets.take("key:team:2/m", key_limit)).allowed for _ in range(3)] == [True, True, False]
    for n in range(50):
        await buckets.take(f"{ADDRESS_BUCKET}2001:db8::{n:x}", failures)
    assert not (await buckets.take("key:team:2/m", key_limit)).allowed
    assert len(buckets._state) <= 10
    assert (await buckets.peek(f"{ADDRESS_BUCKET}2001:db8::31", failures)).remaining == 29  # the newest kept


def test_forwarded_hops_with_ports_are_addresses() -> None:
    """Some proxies write the port in X-Forwarded-For: each connection was then an address of its own for the
    failed-attempt limit, and a trusted proxy's own hop with a port was not recognised as trusted."""
    from modeldex.api.client_address import ClientAddress

    class Headers:
        def __init__(self, value: str) -> None:
            self.value = value

        def items(self) -> list[tuple[str, str]]:
            return [("x-forwarded-for", self.value)]

    address = ClientAddress(("10.0.0.0/8",))
    assert address("10.0.0.2:40000", Headers("203.0.113.7:5555")) == "203.0.113.7"
    assert address("10.0.0.2:40000", Headers("[2001:db8::1]:443, 10.0.0.9:80")) == "2001:db8::1"
    assert address("10.0.0.2:40000", Headers("[2001:db8::2]")) == "2001:db8::2"
    assert address("10.0.0.2:40000", Headers("2001:db8::3")) == "2001:db8::3"
    assert address("10.0.0.2:40000", Headers("unknown")) == "unknown"  # not an address: as it is
