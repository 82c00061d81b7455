"""The web console in-process: sessions, CSRF and cross-site refusals, who may sign in, escaping, and the
pages' answers to bad input. The browser tests (test_console.py) cover the same pages end to end."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from modeldex.api.app import ModeldexApp
from modeldex.catalog.entities import Alias, Model
from modeldex.catalog.keys import KeyTable
from modeldex.catalog.seed import seed_models
from modeldex.catalog.service import Catalog
from modeldex.console.sessions import MAX_AGE_S, Sessions, token_expiry
from modeldex.console.views import ModelFilter, ModelIndex, latency_chart, traffic_chart
from modeldex.discovery.health import UpstreamHealth
from modeldex.ops.traffic import SharedTraffic, Traffic
from modeldex.ops.traffic import report as traffic_report
from modeldex.store import open_store
from modeldex.store.sql import LATENCY_HISTORY

from .conftest import dump_database
from .fake_upstream import FakeUpstream
from .inprocess import BASE_URL, Harness, error_of

pytestmark = pytest.mark.anyio

HOSTILE_ID = "x<script>alert(1)</script>"  # ids may hold `<`, `>` and `/` (no spaces)
HOSTILE_TEXT = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    harness = Harness(tmp_path_factory.mktemp("console"), auth_failure_limit="5/m")
    harness.admin = harness.key("admin", "admin")  # type: ignore[attr-defined]
    harness.reader = harness.key("reader", "read")  # type: ignore[attr-defined]
    yield harness
    harness.stop()


class Session:
    """A signed-in client: its cookie jar holds the session, `csrf` the token its pages carry."""

    def __init__(self, client: httpx.AsyncClient, csrf: str) -> None:
        self.client = client
        self.csrf = csrf

    async def post(self, path: str, data: dict[str, str], headers: dict[str, str] | None = None,
                   csrf: bool = True) -> httpx.Response:
        return await self.client.post(path, data={**({"csrf": self.csrf} if csrf else {}), **data},
                                      headers=headers or {})


async def signed_in(harness: Harness, key: str, client: httpx.AsyncClient | None = None) -> Session:
    client = client or harness.client()
    answer = await client.post("/console/sign-in", data={"key": key})
    assert answer.status_code == 303, answer.text
    page = await client.get("/console/keys")
    return Session(client, csrf_of(page))


def alert_of(page: httpx.Response) -> str:
    """The error the page shows (as HTML text)."""
    found = re.search(r'role="alert">([^<]*)<', page.text)
    assert found is not None, page.text[:2000]
    return found.group(1)


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None, page.text[:500]
    return found.group(1)


@pytest.fixture
async def session(harness: Harness) -> AsyncIterator[Session]:
    session = await signed_in(harness, harness.admin)  # type: ignore[attr-defined]
    yield session
    await session.client.aclose()


async def test_the_cookie_is_httponly_strict_and_secret_free(harness: Harness) -> None:
    async with harness.client() as client:
        answer = await client.post("/console/sign-in", data={"key": harness.admin})  # type: ignore[attr-defined]
    cookie = answer.headers["set-cookie"]
    assert re.fullmatch(r"modeldex_console=[A-Za-z0-9_-]{43}; Path=/console; HttpOnly; SameSite=Strict", cookie)
    assert answer.headers["location"] == "/console/models"
    secret = cookie.split(";")[0].split("=", 1)[1]
    stored = dump_database(harness.url)
    assert secret not in stored and harness.admin not in stored  # type: ignore[attr-defined]


async def test_secure_cookie_under_tls(tmp_path: Path) -> None:
    harness = Harness(tmp_path, tls=True)
    try:
        admin = harness.key("admin", "admin")
        answer = await harness.request("POST", "/console/sign-in", data={"key": admin})
        assert answer.headers["set-cookie"].endswith("; Secure")
    finally:
        harness.stop()


async def test_a_read_key_cannot_sign_in(harness: Harness) -> None:
    answer = await harness.request("POST", "/console/sign-in", data={"key": harness.reader})  # type: ignore[attr-defined]
    assert answer.status_code == 403 and "set-cookie" not in answer.headers
    assert "Not signed in: reader is a read key; the console needs an admin key." in answer.text


async def test_a_wrong_key_is_refused_and_counted(harness: Harness) -> None:
    address = "10.200.0.1"
    for _ in range(5):
        answer = await harness.request("POST", "/console/sign-in", address=address, data={"key": "sk-mdx-wrong"})
        assert answer.status_code == 401 and "Incorrect API key provided" in answer.text
        assert "sk-mdx-wrong" not in answer.text  # masked, as the API masks it
    blocked = await harness.request("POST", "/console/sign-in", address=address,
                                    data={"key": harness.admin})  # type: ignore[attr-defined]
    # The API's answer at this point: 429 with when to come back (it was a 401 without).
    assert blocked.status_code == 429 and "Too many requests with invalid API keys" in blocked.text
    assert int(blocked.headers["retry-after"]) > 0
    empty = await harness.request("POST", "/console/sign-in", data={"key": "  "})
    assert empty.status_code == 400 and "Enter an admin API key" in empty.text


async def test_odd_numbers_and_a_next_with_a_line_break_are_handled(harness: Harness, session: Session) -> None:
    """'²' passes isdigit() and not int(), 2**63 does not fit the database: both were 500 pages. A `next`
    holding CR/LF gave a redirect without a Location (a blank page)."""
    harness.catalog.create("model", {"id": "odd-numbers"})
    for raw in ("²", "9223372036854775808"):
        changes = await session.client.get("/console/changes", params={"before": raw})
        assert changes.status_code == 200, raw
        edited = await session.post("/console/model/edit", {"id": "odd-numbers", "revision": raw, "name": "n"})
        assert edited.status_code < 500, (raw, edited.status_code)
    async with harness.client() as client:
        answer = await client.post("/console/sign-in", data={
            "key": harness.admin, "next": "/console/models\r\nX-Injected: y"})  # type: ignore[attr-defined]
    assert answer.status_code == 303 and answer.headers["location"] == "/console/models"


async def test_a_change_without_the_csrf_token_is_refused(harness: Harness, session: Session) -> None:
    for data, csrf in (({"name": "no-token"}, False), ({"name": "no-token", "csrf": "forged"}, False)):
        answer = await session.post("/console/keys/new", data, csrf=csrf)
        assert answer.status_code == 403 and "security token (CSRF)" in answer.text
    assert "no-token" not in {key.name for key in harness.catalog.list_keys()}


@pytest.mark.parametrize("headers", [
    {"origin": "https://evil.example"},
    {"sec-fetch-site": "cross-site"},
    {"sec-fetch-site": "same-site", "origin": BASE_URL},
    {"origin": "null"},
])
async def test_a_cross_site_form_post_is_refused(harness: Harness, session: Session, headers: dict[str, str]) -> None:
    answer = await session.post("/console/keys/new", {"name": "cross-site"}, headers=headers)
    assert answer.status_code == 403 and "Refused:" in answer.text and "cannot change anything here" in answer.text
    assert "cross-site" not in {key.name for key in harness.catalog.list_keys()}
    # Signing in from another site is refused too (no login CSRF).
    login = await harness.request("POST", "/console/sign-in", headers=headers,
                                  data={"key": harness.admin})  # type: ignore[attr-defined]
    assert login.status_code == 403 and "set-cookie" not in login.headers


async def test_same_origin_posts_are_accepted(harness: Harness, session: Session) -> None:
    for headers in ({"origin": BASE_URL, "sec-fetch-site": "same-origin"}, {}):
        name = f"same-origin-{len(headers)}"
        answer = await session.post("/console/keys/new", {"name": name}, headers=headers)
        assert answer.status_code == 201, answer.text
        assert 'id="secret" value="sk-mdx-' in answer.text and answer.headers["cache-control"] == "no-store"


async def test_a_session_after_sign_out_is_over_on_every_worker(harness: Harness, tmp_path: Path) -> None:
    session = await signed_in(harness, harness.admin)  # type: ignore[attr-defined]
    cookie = session.client.cookies["modeldex_console"]
    other_worker = ModeldexApp(harness.settings, store=None)  # another process's app on the same database
    other_worker.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=other_worker), base_url=BASE_URL,
                                     cookies={"modeldex_console": cookie}) as other:
            assert (await other.get("/console/keys")).status_code == 200  # the session holds there too
            signed_out = await session.post("/console/sign-out", {})
            assert signed_out.status_code == 303 and "Max-Age=0" in signed_out.headers["set-cookie"]
            after = await other.get("/console/keys")
            assert after.status_code == 303 and after.headers["location"].startswith("/console/sign-in")
            refused = await other.post("/console/keys/new", data={"csrf": session.csrf, "name": "late"})
            assert refused.status_code == 401 and "session has ended" in refused.text
    finally:
        other_worker.stop()
        await session.client.aclose()
    assert "late" not in {key.name for key in harness.catalog.list_keys()}


async def test_revoking_the_key_ends_its_sessions(harness: Harness) -> None:
    key = harness.key("short-lived-admin", "admin")
    session = await signed_in(harness, key)
    try:
        harness.catalog.revoke_key("short-lived-admin")
        answer = await session.client.get("/console/models")
        assert answer.status_code == 303
    finally:
        await session.client.aclose()


async def test_html_in_ids_and_metadata_is_escaped_everywhere(harness: Harness, session: Session) -> None:
    harness.catalog.create("model", {"id": HOSTILE_ID, "name": HOSTILE_TEXT, "description": HOSTILE_TEXT,
                                     "owned_by": "o<b>wner"})
    harness.catalog.create("alias", {"id": HOSTILE_ID + "-alias", "target": HOSTILE_ID})
    pages = [
        await session.client.get("/console/models", params={"q": "<script>"}),
        await session.client.get("/console/models", params={"owner": "o<b>wner", "q": HOSTILE_TEXT}),
        await session.client.get("/console/model", params={"id": HOSTILE_ID}),
        await session.client.get("/console/changes"),
        await session.client.get("/console/key", params={"name": "admin", "model": HOSTILE_ID, "q": HOSTILE_TEXT}),
        await session.post("/console/apply", {"action": "preview", "file": f"models:\n  - id: '{HOSTILE_ID}2'\n"}),
        await session.post("/console/models/new", {"id": HOSTILE_ID, "fields": "{}"}),  # already exists: an error
    ]
    for page in pages:
        assert page.status_code in (200, 400), page.text[:300]
        markup = page.text.replace('<script src="/console/static/console.js" defer></script>', "")
        for raw in ("<script", "<img", "<b>", "onerror=alert"):
            assert raw not in markup.replace("onerror=alert(1)&gt;", ""), (raw, page.url, markup[:3000])
    assert "x&lt;script&gt;alert(1)&lt;/script&gt;" in pages[0].text  # found by its id, shown as text
    assert "&lt;script&gt;alert(&#34;pwned&#34;)" in pages[2].text and "o&lt;b&gt;wner" in pages[2].text


async def test_security_headers_and_no_cache(session: Session) -> None:
    page = await session.client.get("/console/models")
    assert page.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"


async def test_sign_in_goes_back_to_the_page_asked_for_never_elsewhere(harness: Harness) -> None:
    for target, expected in (("/console/keys", "/console/keys"), ("//evil.example/", "/console/models"),
                             ("https://evil.example/console/", "/console/models"),
                             ("/console/\\evil", "/console/models")):
        answer = await harness.request("POST", "/console/sign-in",
                                       data={"key": harness.admin, "next": target})  # type: ignore[attr-defined]
        assert answer.headers["location"] == expected, target


async def test_stale_edits_and_bad_input_are_explained(harness: Harness, session: Session) -> None:
    harness.catalog.create("model", {"id": "edit-me", "owned_by": "a", "created": 5, "name": "removed next"})
    first = await session.post("/console/model/edit", {"id": "edit-me", "revision": "1",
                                                       "fields": '{"owned_by": "b", "created": 5}'})
    assert first.status_code == 303, first.text
    assert harness.catalog.get("model", "edit-me")[0].document() == {"id": "edit-me", "created": 5, "owned_by": "b"}
    stale = await session.post("/console/model/edit", {"id": "edit-me", "revision": "1",
                                                       "fields": '{"owned_by": "c", "created": 5}'})
    assert stale.status_code == 409 and "is at revision 2, not 1: it changed since you read it" in stale.text
    assert "&#34;owned_by&#34;: &#34;c&#34;" in stale.text  # the refused edit is kept in the form,
    assert '<input type="hidden" name="revision" value="1">' in stale.text  # with the revision it was made on
    again = await session.post("/console/model/edit", {"id": "edit-me", "revision": "1",
                                                       "fields": '{"owned_by": "c", "created": 5}'})
    assert again.status_code == 409  # saving the refused form again is refused again
    broken = await session.post("/console/model/edit", {"id": "edit-me", "revision": "2", "fields": "{oops"})
    assert broken.status_code == 400 and "not valid JSON" in broken.text
    invalid = await session.post("/console/model/edit", {
        "id": "edit-me", "revision": "2", "fields": '{"context_length": -1, "created": 5, "owned_by": "b"}'})
    assert invalid.status_code == 400 and "context_length: Input should be greater than 0" in alert_of(invalid), \
        alert_of(invalid)
    gone = await session.client.get("/console/model", params={"id": "no-such-model"})
    assert gone.status_code == 404 and "Not found: model &#39;no-such-model&#39;" in gone.text
    bad_key = await session.post("/console/keys/new", {"name": "bad", "rate_limit": "lots"})
    assert bad_key.status_code == 400 and "Not created: rate_limit:" in bad_key.text
    removed = await session.post("/console/model/edit", {"id": "edit-me", "revision": "2", "fields": "{}"})
    assert removed.status_code == 400 and "cannot be removed" in removed.text


async def test_applying_a_changed_plan_needs_a_new_preview(harness: Harness, session: Session) -> None:
    document = "models:\n  - id: planned\n    owned_by: first\n"
    preview = await session.post("/console/apply", {"action": "preview", "file": document})
    digest = re.search(r'name="digest" value="([^"]+)"', preview.text).group(1)  # type: ignore[union-attr]
    harness.catalog.create("model", {"id": "planned", "owned_by": "someone-else"})  # meanwhile
    answer = await session.post("/console/apply", {"action": "apply", "digest": digest, "file": document})
    assert answer.status_code == 409 and "the catalog changed since your preview" in answer.text
    assert "~ model planned (owned_by)" in answer.text
    assert harness.catalog.get("model", "planned")[0].owned_by == "someone-else"
    empty = await session.post("/console/apply", {"action": "preview", "file": " "})
    assert empty.status_code == 400 and "Paste a catalog file first" in empty.text
    invalid = await session.post("/console/apply", {"action": "preview", "file": "models: [{id: 'a', context_length: 0}]"})
    assert invalid.status_code == 400 and alert_of(invalid) == (
        "Not applied: models[0] (id &#39;a&#39;): context_length: Input should be greater than 0")


async def test_what_a_key_sees_and_why(harness: Harness, session: Session) -> None:
    harness.catalog.create("group", {"name": "minimax-only", "members": ["MiniMax-*"]})
    harness.catalog.create_key("limited", "read", {"groups": ["minimax-only"]})
    page = await session.client.get("/console/key", params={"name": "limited", "model": "meta-llama/Llama-3.1-8B-Instruct"})
    assert page.status_code == 200
    listed = re.findall(r'<li><a href="/console/model\?id=[^"]+">([^<]+)</a></li>', page.text)
    served = [m["id"] for m in (await harness.request("GET", "/v1/models", harness.catalog.create_key(
        "limited-twin", "read", {"groups": ["minimax-only"]})[1])).json()["data"]]
    assert listed == served[:50] and listed and all(model_id.startswith("MiniMax-") for model_id in listed)
    assert "is <strong>not visible</strong> to limited" in page.text


async def test_the_console_can_be_turned_off(tmp_path: Path) -> None:
    harness = Harness(tmp_path, console=False)
    try:
        error_of(await harness.request("GET", "/console/sign-in"), 404)
    finally:
        harness.stop()


def test_token_expiry_is_read_from_a_jwt() -> None:
    assert token_expiry("e30.eyJleHAiOjE3MDAwMDAwMDB9.sig") == 1_700_000_000  # {"exp":1700000000}
    assert token_expiry("sk-mdx-abc") is None and token_expiry("a.!!!.c") is None


def test_sessions_and_latency_history_in_both_databases(db_url: str) -> None:
    """The store's side of the console on SQLite and PostgreSQL: sessions found until ended or expired,
    and each poll's latency appended to its upstream's history (the last LATENCY_HISTORY kept)."""
    store = open_store(db_url, seed=seed_models())
    try:
        catalog = Catalog(store)
        _record, secret = catalog.create_key("admin", "admin")
        keys = KeyTable(store.list_keys())
        sessions = Sessions(store)
        cookie, record = sessions.start(keys.caller(secret), secret, now=1000.0)  # type: ignore[arg-type]
        found = sessions.find(cookie, keys, 1001.0)
        assert found is not None and found[0] == record and found[1].name == "admin"
        assert sessions.find(cookie + "x", keys, 1001.0) is None
        assert sessions.find(cookie, keys, record.expires_at + 1) is None  # expired
        sessions.end(cookie)
        assert sessions.find(cookie, keys, 1001.0) is None
        stale, _ = sessions.start(keys.caller(secret), secret, now=1000.0)  # type: ignore[arg-type]
        assert store.purge_sessions(1000.0 + MAX_AGE_S + 1) == 1 and sessions.find(stale, keys, 1001.0) is None

        catalog.create("upstream", {"name": "up", "base_url": "http://127.0.0.1:9/v1"})
        for n in range(LATENCY_HISTORY + 3):
            assert store.claim_upstream("up", "w", 2000.0 + n, 30, force=True)
            failed = n % 10 == 9
            store.finish_upstream("up", "w", UpstreamHealth(
                last_attempt_at=2000.0 + n, latency_ms=None if failed else float(n),
                failing_since=2000.0 if failed else None), next_poll_at=3000.0)
        history = store.upstream_health(2100.0)["up"].latency_history
        assert len(history) == LATENCY_HISTORY and history[-1] == (2000.0 + LATENCY_HISTORY + 2, 62.0, True)
        assert (2009.0 + 10 * 5, None, False) in history
        assert "latency_history" not in store.upstream_health(2100.0)["up"].document()  # not in the API
    finally:
        store.close()


def test_the_latency_chart_is_numbers_only() -> None:
    chart = latency_chart([(1.0, 10.0, True), (2.0, None, False), (3.0, 30.0, True)])
    assert chart.startswith('<svg class="chart" role="img"') and chart.count("<rect") == 1
    assert 'points="0.0,' in chart and "highest 30 ms" in chart
    assert latency_chart([]) == ""


async def test_upstreams_health_chart_and_poll_now(harness: Harness, session: Session) -> None:
    upstream = FakeUpstream([{"id": "polled-a", "object": "model", "owned_by": "fake"}])
    try:
        harness.catalog.create("upstream", {"name": "fake-up", "base_url": f"http://127.0.0.1:{upstream.port}/v1",
                                            "prefix": "fake/"})
        for _ in range(2):
            polled = await session.post("/console/upstreams/poll", {"name": "fake-up"})
            assert polled.status_code == 200, polled.text[:500]
        assert "Polled fake-up: 1 models (0 added" in polled.text  # the second poll: already there
        assert polled.text.count("<svg") == 1 and polled.text.count("<circle") == 1
        assert 'href="/console/models?source=fake-up">1 model</a>' in polled.text
        models = await session.client.get("/console/models", params={"source": "fake-up"})
        assert "fake/polled-a" in models.text and "1 model," in models.text
        model = await session.client.get("/console/model", params={"id": "fake/polled-a"})
        assert "(discovered)" in model.text and "<td>polled-a</td>" in model.text  # its implicit route
        upstream.mode = "html"
        failed = await session.post("/console/upstreams/poll", {"name": "fake-up"})
        assert "Polled fake-up: failed:" in failed.text and 'class="fail"' in failed.text
        missing = await session.post("/console/upstreams/poll", {"name": "nowhere"})
        assert missing.status_code == 404 and "Not found: upstream" in missing.text
    finally:
        upstream.close()


def test_traffic_is_counted_per_minute_and_added_up_across_workers(tmp_path: Path) -> None:
    mine, theirs = Traffic(), Traffic()
    now = 60_000.0
    mine.record("m1", "k1", 200, 3, 5, now=now)
    mine.record("m1", "k1", 502, None, None, now=now - 30)
    mine.record("m2", None, 401, None, None, now=now - 600)
    mine.record("m3", "k1", 200, 1, 1, now=now - 3600)  # an hour ago: out of the window
    theirs.record("m1", "k2", 200, 10, 20, now=now)
    shared_mine = SharedTraffic(mine, tmp_path, worker=os.getpid())
    shared_theirs = SharedTraffic(theirs, tmp_path, worker=os.getppid())  # a live process: a live worker
    gone = SharedTraffic(theirs, tmp_path, worker=2**22 + 7)  # no such process: left out
    shared_theirs.write()
    gone.write()
    rows, workers = shared_mine.rows()
    figures = traffic_report(rows, now=now, workers=workers)
    assert workers == 2
    assert (figures.total.requests, figures.total.errors) == (4, 2)
    assert (figures.total.prompt_tokens, figures.total.completion_tokens) == (13, 25)
    assert figures.by_model["m1"].requests == 3 and figures.by_model["m2"].errors == 1 and "m3" not in figures.by_model
    assert figures.by_key["(no key)"].requests == 1 and figures.by_key["k2"].prompt_tokens == 10
    assert figures.per_minute[-1].requests == 2 and sum(m.requests for m in figures.per_minute) == 4
    chart = traffic_chart(figures.per_minute)
    assert chart.count('class="bar"') == 3 and chart.count('class="fail"') == 2


async def test_the_traffic_page_counts_inference_requests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    upstream = FakeUpstream()
    harness = Harness(tmp_path)
    try:
        harness.catalog.create("upstream", {"name": "fake", "base_url": f"http://127.0.0.1:{upstream.port}/v1",
                                            "routing_only": True})
        harness.catalog.create("model", {"id": "routed<b>", "routes": [{"upstream": "fake", "model": "fake-chat"}]})
        reader = harness.key("traffic-reader")
        # The chart has a bar a minute (of the clock): the requests below fall in one, unless a minute ends while
        # they run (a loaded machine makes that likelier); not in a minute's last 10 s, then.
        if time.time() % 60 > 50:
            await asyncio.sleep(60.1 - time.time() % 60)
        for _ in range(3):
            answer = await harness.request("POST", "/v1/chat/completions", reader,
                                           json={"model": "routed<b>", "messages": []})
            assert answer.status_code == 200, answer.text
        upstream.chat_mode = "5xx"
        await harness.request("POST", "/v1/chat/completions", reader, json={"model": "routed<b>", "messages": []})
        await harness.request("POST", "/v1/chat/completions", "sk-mdx-wrong", json={"model": "x", "messages": []})
        for n in range(3):  # names of no model are a client's strings: counted under one name, never kept
            await harness.request("POST", "/v1/chat/completions", reader,
                                  json={"model": f"made-up-{n}-" + "x" * 10_000, "messages": []})
        session = await signed_in(harness, harness.key("admin", "admin"))
        page = await session.client.get("/console/traffic")
        await session.client.aclose()
        await harness.app.upstream_client.close()
        assert page.status_code == 200
        assert "Last hour: 8 inference requests, 5 errors" in page.text
        assert re.search(r'routed&lt;b&gt;</a></td>\s*<td>4</td><td>1</td>', page.text), page.text
        assert re.search(r'\(unknown model\)</td>\s*<td>3</td><td>3</td>', page.text), page.text
        assert "made-up-" not in page.text and len(page.text) < 50_000
        assert re.search(r'traffic-reader</a></td>\s*<td>7</td><td>4</td>', page.text)
        assert "<td>(no key)</td>" in page.text and page.text.count('class="bar"') == 1
    finally:
        harness.stop()
        upstream.close()


async def test_pages_count_against_the_keys_rate_limit(harness: Harness) -> None:
    key = harness.key("slow-admin", "admin", rate_limit="3/m")
    session = await signed_in(harness, key)  # the sign-in's redirect target and /console/keys: 1 page
    try:
        pages = [await session.client.get("/console/models") for _ in range(3)]
        assert [page.status_code for page in pages] == [200, 200, 429]
        assert alert_of(pages[-1]).startswith(
            "Rate limit reached for requests with key &#39;slow-admin&#39;: limit 3, remaining 0.")
    finally:
        await session.client.aclose()


def test_searching_100000_models_takes_milliseconds() -> None:
    catalog = {f"bulk/model-{n:06d}": Model.stored(f"bulk/model-{n:06d}", n, f"owner-{n % 7}",
                                                    None if n % 3 else "up", None) for n in range(100_000)}
    started = time.perf_counter()
    index = ModelIndex(catalog, {})
    found = [index.search(ModelFilter(q="model-09")), index.search(ModelFilter(owner="owner-3", source="up")),
             index.search(ModelFilter(q="nothing"))]
    took = time.perf_counter() - started
    assert [len(ids) for ids in found] == [10_000, len(range(3, 100_000, 21)), 0]
    assert took < 1.0, f"building the index and three searches of 100,000 models took {took:.2f} s"  # ~0.15 s here


async def test_an_identity_providers_admin_token_signs_in_until_it_expires(tmp_path: Path) -> None:
    """A token with the admin role signs in as `jwt:ISSUER:SUBJECT` (the change feed says so), with the
    issuer's rate limit; a token without it cannot; the session ends with the token, or with its issuer."""
    signing_key = ec.generate_private_key(ec.SECP256R1())
    issuer = "https://login.example.test/realms/acme"
    pem = signing_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    harness = Harness(tmp_path)
    harness.catalog.create("issuer", {"name": "corp", "issuer": issuer, "public_key": pem, "audiences": ["modeldex"],
                                      "algorithms": ["ES256"], "groups_claim": "roles", "admin_value": "ops",
                                      "rate_limit": "100/m", "subject_claim": "preferred_username"})

    def token(roles: list[str], lifetime: float) -> str:
        now = time.time()
        return jwt.encode({"iss": issuer, "aud": "modeldex", "sub": "1", "preferred_username": "ada",
                           "roles": roles, "iat": int(now), "exp": int(now + lifetime)}, signing_key, algorithm="ES256")

    try:
        refused = await harness.request("POST", "/console/sign-in", data={"key": token([], 300)})
        assert refused.status_code == 403 and "corp:ada is a read key" in refused.text
        ada = token(["ops"], 300)
        session = await signed_in(harness, ada)
        try:
            created = await session.post("/console/keys/new", {"name": "made-by-ada"})
            assert created.status_code == 201
            assert harness.catalog.changes()[-1].actor == "jwt:corp:ada"
            stored = dump_database(harness.url)
            assert "'jwt', 'corp:ada', 'corp:ada', '100/m'" in stored  # the issuer's limit, not none
            assert ada not in stored and ada.split(".")[2] not in stored  # the token is kept sealed only
            # Each request resolves the token again, as the API does: no longer admin, the session is over.
            harness.catalog.update("issuer", "corp", {"admin_value": "others"})
            assert (await session.client.get("/console/keys")).status_code == 303
            harness.catalog.update("issuer", "corp", {"admin_value": "ops"})
            assert (await session.client.get("/console/keys")).status_code == 200  # its token is admin again
            # Its signing key no longer the issuer's: over as well.
            other_pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
                Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
            harness.catalog.update("issuer", "corp", {"public_key": other_pem})
            assert (await session.client.get("/console/keys")).status_code == 303
            harness.catalog.update("issuer", "corp", {"public_key": pem})
            assert (await session.client.get("/console/keys")).status_code == 200
            harness.catalog.delete("issuer", "corp")
            assert (await session.client.get("/console/keys")).status_code == 303  # its issuer is gone
        finally:
            await session.client.aclose()
        harness.catalog.create("issuer", {"name": "corp", "issuer": issuer, "public_key": pem,
                                          "audiences": ["modeldex"], "algorithms": ["ES256"], "leeway": 0,
                                          "groups_claim": "roles", "admin_value": "ops"})
        # Its `exp` in whole seconds: 2 to 3 s from now, time enough to sign in on a loaded machine (with 2 s
        # it was 1 to 2 s); then past it.
        lapsing = token(["ops"], 3)
        short = await signed_in(harness, lapsing)
        try:
            expires = token_expiry(lapsing)
            assert expires is not None
            await asyncio.sleep(max(0.0, expires - time.time()) + 0.1)
            assert (await short.client.get("/console/keys")).status_code == 303  # the token expired: so did it
        finally:
            await short.client.aclose()
    finally:
        harness.stop()


def test_model_filters_by_source_staleness_and_alias() -> None:
    catalog = {
        "mine": Model.stored("mine", 1, "me", None, None),
        "up/a": Model.stored("up/a", 2, "them", "up", None),
        "up/b": Model.stored("up/b", 3, "them", "up", 1000.0),
        "other/c": Model.stored("other/c", 4, "them", "other", None),
    }
    index = ModelIndex(catalog, {"latest": Alias(id="latest", target="up/a")})

    def ids(**wanted: str) -> list[str]:
        return index.search(ModelFilter(**wanted))

    assert ids() == ["mine", "other/c", "up/a", "up/b"]
    assert ids(source="operator") == ["mine"] and ids(source="upstream") == ["other/c", "up/a", "up/b"]
    assert ids(source="up") == ["up/a", "up/b"] and ids(source="up", stale="no") == ["up/a"]
    assert ids(stale="yes") == ["up/b"] and ids(alias="yes") == ["up/a"] and "up/a" not in ids(alias="no")
    assert ids(q="UP/", owner="them", alias="no") == ["up/b"] and index.sources == {"up": 2, "other": 1}


async def test_create_delete_export_and_key_settings(harness: Harness, session: Session) -> None:
    created = await session.post("/console/models/new", {"id": "made/here", "owned_by": "ops",
                                                         "fields": '{"context_length": 4096}'})
    assert created.status_code == 303 and created.headers["location"] == "/console/model?id=made%2Fhere&done=created"
    assert (await session.client.get(created.headers["location"])).text.count("Created.") == 1
    served = await harness.request("GET", "/v1/models/made/here", harness.reader)  # type: ignore[attr-defined]
    assert served.status_code == 200 and served.json()["owned_by"] == "ops"
    refused = await session.post("/console/models/new", {"id": "made/here/", "fields": "[]"})
    assert refused.status_code == 400 and alert_of(refused) == "must be a JSON object ({...})"

    exported = await session.client.get("/console/catalog.yaml")
    assert exported.headers["content-disposition"] == 'attachment; filename="catalog.yaml"'
    assert {"id": "made/here", "created": served.json()["created"], "owned_by": "ops", "context_length": 4096} in \
        yaml.safe_load(exported.text)["models"]

    stale = await session.post("/console/model/delete", {"id": "made/here", "revision": "7"})
    assert stale.status_code == 400 and "is at revision 1, not 7" in alert_of(stale)
    deleted = await session.post("/console/model/delete", {"id": "made/here", "revision": "1"})
    assert deleted.status_code == 303 and deleted.headers["location"] == "/console/models?done=deleted"
    assert (await harness.request("GET", "/v1/models/made/here", harness.reader)).status_code == 404  # type: ignore[attr-defined]

    harness.catalog.create("group", {"name": "made", "members": ["made/*", "MiniMax-M3"]})
    harness.catalog.create_key("tuned", "read")
    saved = await session.post("/console/key/edit", {"name": "tuned", "revision": "1", "scope": "read",
                                                    "rate_limit": "20/s", "policy": '{"groups": ["made"]}'})
    assert saved.status_code == 303, saved.text
    key = harness.catalog.get_key("tuned")
    assert key.rate_limit == "20/s" and key.policy.document() == {"groups": ["made"], "patterns": []} and key.revision == 2
    page = await session.client.get(saved.headers["location"])
    assert "Key saved." in page.text
    assert re.search(r"The Models API lists 1 entry\s+for this key", page.text), re.findall(r"lists[^<]*", page.text)
    stale_key = await session.post("/console/key/edit", {"name": "tuned", "revision": "1", "scope": "admin",
                                                        "rate_limit": "", "policy": "{}"})
    assert stale_key.status_code == 409 and "Not saved:" in alert_of(stale_key)
    assert harness.catalog.get_key("tuned").scope.value == "read"
    unknown_group = await session.post("/console/key/edit", {"name": "tuned", "revision": "2", "scope": "read",
                                                            "rate_limit": "", "policy": '{"groups": ["nope"]}'})
    assert unknown_group.status_code == 400 and "nope" in alert_of(unknown_group)


async def test_the_models_page_follows_new_aliases(harness: Harness, session: Session) -> None:
    harness.catalog.create("model", {"id": "aliased-later"})
    before = await session.client.get("/console/models", params={"q": "aliased-later", "alias": "yes"})
    assert "0 models" in before.text
    harness.catalog.create("alias", {"id": "nickname", "target": "aliased-later"})  # the models stay the same
    after = await session.client.get("/console/models", params={"q": "aliased-later", "alias": "yes"})
    assert "1 model," in after.text and "<td>nickname</td>" in after.text


async def test_the_change_feed_pages_past_a_large_version(harness: Harness, session: Session) -> None:
    harness.catalog.apply({"models": [{"id": f"many/{n:02d}"} for n in range(60)]})  # one version, 60 entries
    version = harness.catalog.version()
    harness.catalog.create("model", {"id": "after-many"})
    first = await session.client.get("/console/changes")
    assert "model after-many" in first.text and first.text.count(f"version {version} ·") == 49
    assert f"Version {version} changed more entities than this page shows" in first.text
    older = re.search(r'href="(/console/changes\?before=\d+)"', first.text).group(1)  # type: ignore[union-attr]
    assert older == f"/console/changes?before={version}"
    second = await session.client.get(older)
    shown = [int(v) for v in re.findall(r"version (\d+) ·", second.text)]
    assert shown and max(shown) < version


async def test_a_form_over_the_body_limit_is_refused_in_words(tmp_path: Path) -> None:
    harness = Harness(tmp_path, max_body_bytes=4096)
    try:
        session = await signed_in(harness, harness.key("admin", "admin"))
        answer = await session.post("/console/apply", {"action": "preview", "file": "models: []\n" + "#" * 5000})
        await session.client.aclose()
        assert answer.status_code == 413
        assert alert_of(answer).startswith("The form is larger than the server takes (4,096 bytes")
    finally:
        harness.stop()


async def test_signing_in_again_ends_the_session_it_replaces(harness: Harness) -> None:
    session = await signed_in(harness, harness.admin)  # type: ignore[attr-defined]
    try:
        first = session.client.cookies["modeldex_console"]
        again = await session.client.post("/console/sign-in", data={"key": harness.admin})  # type: ignore[attr-defined]
        assert again.status_code == 303 and session.client.cookies["modeldex_console"] != first
        async with harness.client() as old:
            old.cookies.set("modeldex_console", first, path="/console")
            assert (await old.get("/console/keys")).status_code == 303
        assert (await session.client.get("/console/keys")).status_code == 200
    finally:
        await session.client.aclose()


async def test_a_form_sent_after_its_session_ended_is_shown_back(harness: Harness) -> None:
    """Saving a long edit after the session ended (signed out in another tab, expired) changed nothing and
    dropped what was typed: the 401 page had neither the text nor a way back to the page it came from."""
    harness.catalog.create("model", {"id": "typed-in", "owned_by": "a", "created": 5})
    session = await signed_in(harness, harness.admin)  # type: ignore[attr-defined]
    try:
        assert (await session.post("/console/sign-out", {})).status_code == 303  # (another tab)
        typed = '{"created": 5, "owned_by": "a",\n "description": "an hour of <careful> writing"}'
        page_url = f"{BASE_URL}/console/model?id=typed-in"
        answer = await session.post("/console/model/edit", {"id": "typed-in", "revision": "1", "fields": typed},
                                    headers={"referer": page_url, "origin": BASE_URL})
        assert answer.status_code == 401 and "Your session has ended" in alert_of(answer)
        assert "an hour of &lt;careful&gt; writing" in answer.text  # shown back, as text
        assert session.csrf not in answer.text  # the hidden plumbing is not
        assert 'href="/console/sign-in?next=/console/model%3Fid%3Dtyped-in"' in answer.text  # back to that page
        assert harness.catalog.get("model", "typed-in")[0].document().get("description") is None
        # A post from another site gets nothing echoed back (no text injected into a console page).
        forged = await session.post("/console/model/edit", {"id": "typed-in", "fields": "Call 555-0100 now"},
                                    headers={"origin": "https://evil.example", "referer": "https://evil.example/"})
        assert forged.status_code == 401 and "555-0100" not in forged.text and "next=" not in forged.text
    finally:
        await session.client.aclose()
    # Signed in again (in another tab): the old page's form carries the old session's token; what it held is
    # shown back too, and the way back is to open the page again, not to reload (which sends it again).
    again = await signed_in(harness, harness.admin)  # type: ignore[attr-defined]
    try:
        stale = await again.post("/console/keys/new", {"name": "typed-key", "policy": '{"groups": []}'},
                                 csrf=False, headers={"referer": f"{BASE_URL}/console/keys"})
        assert stale.status_code == 403 and "Open the page again" in alert_of(stale)
        assert "typed-key" in stale.text and 'href="/console/keys">Back to the page' in stale.text
    finally:
        await again.client.aclose()


async def test_wrong_methods_get_an_html_405_and_form_addresses_say_what_they_are(session: Session) -> None:
    """A form's address opened as a page answered "There is no such page"; another method (PUT, DELETE)
    answered the API's JSON 405 instead of a console page."""
    for method, path, allowed in (("GET", "/console/model/edit", "POST"), ("GET", "/console/upstreams/poll", "POST"),
                                  ("DELETE", "/console/models", "GET, HEAD"), ("PUT", "/console/keys/new",
                                                                               "GET, HEAD, POST"),
                                  ("PATCH", "/console", "GET, HEAD")):
        answer = await session.client.request(method, path)
        assert answer.status_code == 405, (method, path, answer.text[:300])
        assert answer.headers["content-type"] == "text/html; charset=utf-8" and answer.headers["allow"] == allowed
        assert "<h1>Something is wrong</h1>" in answer.text and "Sign out" in answer.text  # the console's layout
    assert "not a page to open" in alert_of(await session.client.get("/console/model/edit"))
    for method in ("GET", "DELETE"):
        missing = await session.client.request(method, "/console/no-such-page")
        assert missing.status_code == 404 and "There is no such page in the console." in missing.text
        assert missing.headers["content-type"] == "text/html; charset=utf-8"


async def test_a_stale_edit_links_to_the_current_revision(harness: Harness, session: Session) -> None:
    """The refusal said to reload the page, which only sends the refused form again (refused again)."""
    harness.catalog.create("model", {"id": "edited-twice", "owned_by": "a", "created": 5})
    harness.catalog.update("model", "edited-twice", {"name": "theirs"})
    stale = await session.post("/console/model/edit", {"id": "edited-twice", "revision": "1",
                                                       "fields": '{"owned_by": "mine", "created": 5}'})
    assert stale.status_code == 409 and "open it again to edit it" in alert_of(stale)
    assert '<a href="/console/model?id=edited-twice#edit">Open revision 2 to edit it</a>' in stale.text
    fresh = await session.client.get("/console/model", params={"id": "edited-twice"})
    assert "Open revision" not in fresh.text
    harness.catalog.create_key("edited-key", "read")
    harness.catalog.update_key("edited-key", rate_limit="5/s")
    stale_key = await session.post("/console/key/edit", {"name": "edited-key", "revision": "1", "scope": "read",
                                                        "rate_limit": "", "policy": "{}"})
    assert stale_key.status_code == 409 and "Open the key again" in alert_of(stale_key)
    assert '<a href="/console/key?name=edited-key#edit">Open revision 2 to edit it</a>' in stale_key.text


async def test_the_sign_in_page_of_a_signed_in_browser_goes_on_to_the_page_asked_for(session: Session) -> None:
    """A tab left on the sign-in page (its session ended) while the admin signed in again in another tab:
    reloading it went to the models page, not the page it was asked for."""
    answer = await session.client.get("/console/sign-in", params={"next": "/console/key?name=admin"})
    assert answer.status_code == 303 and answer.headers["location"] == "/console/key?name=admin"
    elsewhere = await session.client.get("/console/sign-in", params={"next": "https://evil.example/"})
    assert elsewhere.headers["location"] == "/console/models"


async def test_a_form_refused_by_the_rate_limit_is_shown_back(harness: Harness) -> None:
    key = harness.key("hasty-admin", "admin", rate_limit="1/m")
    session = await signed_in(harness, key)  # its one page (the sign-in's redirect target and /console/keys)
    try:
        answer = await session.post("/console/keys/new", {"name": "typed-in-a-hurry", "policy": '{"groups": []}'},
                                    headers={"referer": f"{BASE_URL}/console/keys"})
        assert answer.status_code == 429 and "Rate limit reached" in alert_of(answer)
        assert "typed-in-a-hurry" in answer.text and 'href="/console/keys">Back to the page' in answer.text
        assert "typed-in-a-hurry" not in {k.name for k in harness.catalog.list_keys()}
    finally:
        await session.client.aclose()
