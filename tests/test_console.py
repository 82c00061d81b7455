"""The web console end to end: a real server on a real port with 10,000 models, driven by headless Chromium
(Debian's, through Playwright). One browser and one server for the module; each test signs in with a fresh
browser context (its own cookies). Attacks and edge cases that need no browser are in-process, in
test_inprocess_console.py.

Set MODELDEX_CONSOLE_SCREENSHOTS to a directory to have the tests save screenshots of the main pages there
(docs/images/ holds the committed ones)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from playwright.sync_api import sync_playwright
from sqlalchemy import insert, update

from modeldex.store.schema import catalog_state, models
from modeldex.store.sql import create_store_engine

from .browser import ensure_chromium
from .conftest import Server, create_key, new_database, wait_until
from .fake_upstream import FakeUpstream

BULK = 10_000
SCREENSHOTS = os.environ.get("MODELDEX_CONSOLE_SCREENSHOTS")


def add_bulk_models(db_url: str, count: int) -> None:
    """`count` models written straight into the tables (with the version bumped, so a server loads them):
    through `Catalog.apply` 10,000 take 12 s, this way well under one."""
    engine = create_store_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(insert(models), [
                {"id": f"bulk/model-{n:05d}", "created": 1_700_000_000 + n, "owned_by": f"owner-{n % 7}",
                 "meta": {"name": f"Bulk model {n}"}, "revision": 1} for n in range(count)])
            conn.execute(update(catalog_state).values(version=catalog_state.c.version + 1))
    finally:
        engine.dispose()


class Console:
    def __init__(self, tmp: Path, request: pytest.FixtureRequest) -> None:
        self.db_url = new_database("sqlite", tmp, request)
        self.admin_key = create_key(self.db_url, "admin", "admin")
        self.read_key = create_key(self.db_url, "reader", "read")
        add_bulk_models(self.db_url, BULK)
        self.server = Server(self.db_url, tmp / "server.log")
        self.base = self.server.base_url

    def api(self, path: str, key: str | None = None) -> httpx.Response:
        return self.server.get(path, key or self.read_key)


@pytest.fixture(scope="module")
def console(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    deployment = Console(tmp_path_factory.mktemp("console"), request)
    yield deployment
    deployment.server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    executable = ensure_chromium()
    with sync_playwright() as playwright:
        # --no-sandbox: Chromium refuses to start as root with its sandbox (CI runs as root).
        browser = playwright.chromium.launch(executable_path=str(executable), headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def context(browser):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(5000)
    yield context
    context.close()


@pytest.fixture(scope="module")
def admin_session(browser, console: Console) -> dict:  # type: ignore[no-untyped-def, type-arg]
    """One sign-in shared by the tests that are not about signing in: its cookie, as the browser stored it."""
    context = browser.new_context()
    try:
        sign_in(context, console)
        return context.storage_state()
    finally:
        context.close()


@pytest.fixture
def signed(browser, admin_session):  # type: ignore[no-untyped-def]
    """A new browser context (its own tabs) holding the shared session's cookie."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, storage_state=admin_session)
    context.set_default_timeout(5000)
    yield context
    context.close()


def open_page(context, console: Console, path: str = "/console/models"):  # type: ignore[no-untyped-def]
    page = context.new_page()
    page.goto(console.base + path)
    assert page.url == console.base + path, "not signed in"
    return page


def sign_in(context, console: Console, key: str | None = None):  # type: ignore[no-untyped-def]
    page = context.new_page()
    page.goto(console.base + "/console")
    assert page.url.startswith(console.base + "/console/sign-in")
    page.get_by_label(re.compile("Admin API key")).fill(key or console.admin_key)
    page.keyboard.press("Enter")  # the form works from the keyboard
    page.wait_for_url(re.compile(r"/console/models"))
    return page


def screenshot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"console-{name}.png"), full_page=False)


def test_sign_in_and_search_10000_models(console: Console, context) -> None:  # type: ignore[no-untyped-def]
    page = sign_in(context, console)
    count = page.get_by_role("status").first
    total = int(re.search(r"(\d+) models", count.inner_text()).group(1))
    assert total >= BULK
    screenshot(page, "models")
    started = time.monotonic()
    page.get_by_label("Search").fill("model-09999")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(re.compile(r"q=model-09999"))
    took = time.monotonic() - started
    assert page.get_by_role("status").first.inner_text().startswith("1 model,")
    assert took < 2, f"a search of {total} models took {took:.2f} s"
    # Filters and server-side paging: owner-3 holds every seventh bulk model.
    page.goto(console.base + "/console/models?owner=owner-3&source=operator")
    assert page.get_by_role("status").first.inner_text().startswith(f"{len(range(3, BULK, 7))} models")
    page.get_by_role("link", name="Next →").click()
    assert "showing 51–100" in page.get_by_role("status").first.inner_text()
    page.get_by_role("link", name="bulk/model-00360").click()
    assert page.get_by_role("heading", level=1).inner_text() == "bulk/model-00360"
    screenshot(page, "model")


def test_key_secret_shown_once_then_revoked(console: Console, signed) -> None:  # type: ignore[no-untyped-def]
    signed.grant_permissions(["clipboard-read", "clipboard-write"], origin=console.base)
    page = open_page(signed, console)
    page.get_by_role("link", name="Keys", exact=True).click()
    page.get_by_label("Name").fill("from-console")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_label("Secret of from-console").input_value()
    assert secret.startswith("sk-mdx-")
    page.get_by_role("button", name="Copy").click()
    page.get_by_text("Copied.").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    screenshot(page, "key-created")
    # The key works at once, and the secret is nowhere once the page is loaded again.
    assert wait_until(lambda: console.api("/v1/models", secret).status_code == 200, 1.0) is not None
    page.reload()  # sends the form again: refused, the name is taken, and no secret comes back
    assert secret not in page.content()
    assert "already exists" in page.get_by_role("alert").inner_text()
    page.goto(console.base + "/console/keys")
    assert secret not in page.content()
    screenshot(page, "keys")
    page.get_by_role("button", name="Revoke key from-console").click()
    page.get_by_text("Key revoked.").wait_for()
    assert page.get_by_role("link", name="from-console").count() == 0
    assert wait_until(lambda: console.api("/v1/models", secret).status_code == 401, 1.0) is not None


def test_second_edit_from_a_stale_page_is_refused(console: Console, signed) -> None:  # type: ignore[no-untyped-def]
    first = open_page(signed, console)
    second = signed.new_page()
    url = console.base + "/console/model?id=" + quote("bulk/model-00042", safe="")
    first.goto(url)
    second.goto(url)
    first.bring_to_front()  # a page in the background has its frames throttled: clicks there wait seconds
    fields = first.get_by_label(re.compile("Fields"))
    fields.fill(fields.input_value().replace('"owned_by": "owner-0"', '"owned_by": "first-editor"'))
    first.get_by_role("button", name="Save").click()
    first.get_by_text("Saved.").wait_for()
    # Served by the Models API within a second of the console's save.
    served = wait_until(lambda: console.api("/v1/models/bulk/model-00042").json().get("owned_by") == "first-editor",
                        1.0)
    assert served is not None, "the console's change was not served within 1 s"
    second.bring_to_front()
    fields = second.get_by_label(re.compile("Fields"))
    fields.fill(fields.input_value().replace('"owned_by": "owner-0"', '"owned_by": "second-editor"'))
    second.get_by_role("button", name="Save").click()
    alert = second.get_by_role("alert")
    assert "changed since you read it" in alert.inner_text() and "open it again" in alert.inner_text()
    screenshot(second, "stale-edit")
    assert "second-editor" in second.get_by_label(re.compile("Fields")).input_value()  # the edit is not lost
    second.get_by_role("button", name="Save").click()  # and saving it again still cannot overwrite the first
    assert "changed since you read it" in second.get_by_role("alert").inner_text()
    assert console.api("/v1/models/bulk/model-00042").json()["owned_by"] == "first-editor"
    second.get_by_role("link", name="Open revision 2 to edit it").click()  # (reloading would send it again)
    assert '"owned_by": "first-editor"' in second.get_by_label(re.compile("Fields")).input_value()


def test_apply_a_catalog_file_after_its_preview(console: Console, signed) -> None:  # type: ignore[no-untyped-def]
    page = open_page(signed, console)
    page.get_by_role("link", name="Changes", exact=True).click()
    page.get_by_role("link", name="Apply a catalog file").click()
    page.get_by_label(re.compile("Catalog file")).fill(
        "models:\n  - id: applied/from-console\n    owned_by: console\n    context_length: 8192\n")
    page.get_by_role("button", name="Preview").click()
    page.get_by_text("+ model applied/from-console").wait_for()
    assert console.api("/v1/models/applied/from-console").status_code == 404  # a preview changes nothing
    screenshot(page, "apply-preview")
    page.get_by_role("button", name="Apply this change").click()
    page.get_by_text(re.compile(r"Applied 1 change; catalog version \d+")).wait_for()
    served = wait_until(lambda: console.api("/v1/models/applied/from-console").status_code == 200, 1.0)
    assert served is not None, "the applied file was not served within 1 s"
    page.get_by_role("link", name="Changes", exact=True).click()
    page.get_by_role("link", name="model applied/from-console").first.wait_for()
    screenshot(page, "changes")


def test_html_in_ids_and_metadata_is_text(console: Console, signed) -> None:  # type: ignore[no-untyped-def]
    in_id = "evil<img/src=x/onerror=window.pwned=1>"  # ids have no spaces
    in_name = "<script>window.pwned=2</script>"
    in_description = '<img src=x onerror="window.pwned=3">'
    httpx.post(console.base + "/v1/admin/models", headers={"Authorization": f"Bearer {console.admin_key}"},
               json={"id": in_id, "name": in_name, "description": in_description}).raise_for_status()
    page = open_page(signed, console)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    for path, shown in (("/console/models?q=evil", (in_id, in_name)),
                        ("/console/model?id=" + quote(in_id, safe=""), (in_id, in_name, in_description)),
                        ("/console/changes", (in_id, in_name, in_description)),
                        ("/console/key?name=admin&model=" + quote(in_id, safe=""), (in_id,))):
        page.goto(console.base + path)
        text = page.text_content("main") or ""  # closed <details> too
        for value in shown:  # shown as the text it is
            assert value in text or value.replace('"', '\\"') in text, (path, value)
        assert page.evaluate("window.pwned") is None, path
        assert page.locator("main img, main script").count() == 0, path
    assert dialogs == []


def test_phone_width_and_keyboard(console: Console, browser, admin_session) -> None:  # type: ignore[no-untyped-def]
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, storage_state=admin_session)
    try:
        page = open_page(phone, console)
        for path in ("/console/models", "/console/model?id=bulk%2Fmodel-00001", "/console/keys", "/console/key?name=admin",
                     "/console/upstreams", "/console/traffic", "/console/changes", "/console/apply"):
            page.goto(console.base + path)
            assert page.evaluate("document.documentElement.scrollWidth") <= 390, f"{path} scrolls sideways"
        page.goto(console.base + "/console/models")
        screenshot(page, "phone")
        page.keyboard.press("Tab")  # the first stop is the skip link
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    finally:
        phone.close()


def test_sign_out_ends_the_session(console: Console, context) -> None:  # type: ignore[no-untyped-def]
    page = sign_in(context, console)
    cookie = next(c for c in context.cookies() if c["name"] == "modeldex_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    assert page.evaluate("document.cookie") == ""  # not readable by scripts
    assert page.evaluate("Object.keys(localStorage).length + Object.keys(sessionStorage).length") == 0
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    page.get_by_role("button", name="Sign out").click()
    page.get_by_text("Signed out.").wait_for()
    page.goto(console.base + "/console/keys")
    assert "/console/sign-in" in page.url
    # The old cookie, replayed: the session is over on the server, not just forgotten by the browser.
    with httpx.Client(base_url=console.base, cookies={"modeldex_console": cookie["value"]}) as client:
        assert client.get("/console/keys").status_code == 303
        refused = client.post("/console/keys/new", data={"csrf": csrf, "name": "after-sign-out"})
        assert refused.status_code == 401 and "session has ended" in refused.text
    assert console.api("/v1/admin/keys/after-sign-out", console.admin_key).status_code == 404


def test_upstream_health_poll_now_and_traffic(console: Console, signed) -> None:  # type: ignore[no-untyped-def]
    upstream = FakeUpstream([{"id": "served-by-fake", "object": "model", "owned_by": "fake"}])
    admin = {"Authorization": f"Bearer {console.admin_key}"}
    try:
        httpx.post(console.base + "/v1/admin/upstreams", headers=admin, json={
            "name": "fake", "base_url": f"http://127.0.0.1:{upstream.port}/v1", "prefix": "fake/"}).raise_for_status()
        page = open_page(signed, console)
        page.get_by_role("link", name="Upstreams", exact=True).click()
        for _ in range(3):  # a few polls, for the chart
            page.get_by_role("button", name="Poll fake now").click()
            page.get_by_text(re.compile(r"Polled fake: 1 models")).wait_for()
        assert page.locator("svg.chart circle").count() == 1
        page.get_by_role("link", name="1 model", exact=True).click()
        assert page.get_by_role("link", name="fake/served-by-fake").count() == 1
        # Three completions through the gateway, for the traffic page.
        for _ in range(3):
            answer = httpx.post(console.base + "/v1/chat/completions", json={"model": "fake/served-by-fake",
                                "messages": []}, headers={"Authorization": f"Bearer {console.read_key}"}, timeout=10)
            assert answer.status_code == 200, answer.text
        page.goto(console.base + "/console/upstreams")
        assert page.get_by_text("Last success").count() == 1
        screenshot(page, "upstreams")
        page.get_by_role("link", name="Traffic", exact=True).click()
        summary = page.get_by_role("status").first.inner_text()
        requests = int(re.search(r"Last hour: (\d+) inference request", summary).group(1))
        assert requests == 3, summary
        assert page.get_by_role("link", name="reader").count() == 1
        screenshot(page, "traffic")
    finally:
        upstream.close()


def test_a_cross_site_page_cannot_post_with_the_session(console: Console, signed) -> None:  # type: ignore[no-untyped-def]
    """Another site's page that posts a form to the console, in the browser of a signed-in admin: the browser
    leaves the SameSite=Strict cookie out, so the post reaches the console without a session."""
    page = open_page(signed, console)
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")  # even with the right token
    attacker = "http://attacker.example/"
    signed.route(attacker, lambda route: route.fulfill(content_type="text/html", body=(
        f'<form method="post" action="{console.base}/console/keys/new">'
        f'<input name="csrf" value="{csrf}"><input name="name" value="planted"></form>'
        "<script>document.forms[0].submit()</script>")))
    page.goto(attacker)
    page.wait_for_url(console.base + "/console/keys/new")
    assert "Your session has ended" in page.inner_text("main")
    assert console.api("/v1/admin/keys/planted", console.admin_key).status_code == 404
    # Strict, not Lax: even a plain link from another site arrives without the session.
    signed.route(attacker + "link", lambda route: route.fulfill(
        content_type="text/html", body=f'<a href="{console.base}/console/keys">keys</a>'))
    page.goto(attacker + "link")
    page.get_by_role("link", name="keys").click()
    page.wait_for_url(re.compile(r"/console/sign-in"))
    page.goto(console.base + "/console/keys")  # typed in: the session is still there
    assert page.get_by_role("heading", name="API keys").count() == 1


def test_sessions_across_workers_and_replicas(console: Console, start_server) -> None:  # type: ignore[no-untyped-def]
    """A session made on one server holds on another on the same database (two workers of its own), and
    signing out on the first ends it on every worker of the second."""
    replica = start_server(console.db_url, "--workers", "2")
    with httpx.Client(base_url=console.base) as here, httpx.Client(base_url=replica.base_url) as there:
        assert here.post("/console/sign-in", data={"key": console.admin_key}).status_code == 303
        there.cookies = here.cookies
        answers = [there.get("/console/keys") for _ in range(20)]  # spread over both workers
        assert {a.status_code for a in answers} == {200}
        csrf = re.search(r'name="csrf" value="([^"]+)"', answers[0].text).group(1)
        created = there.post("/console/keys/new", data={"csrf": csrf, "name": "made-on-a-replica"})
        assert created.status_code == 201
        assert here.post("/console/sign-out", data={"csrf": csrf}).status_code == 303
        there.cookies = httpx.Cookies({"modeldex_console": answers[0].request.headers["cookie"].split("=", 1)[1]})
        assert {there.get("/console/keys").status_code for _ in range(20)} == {303}
        refused = there.post("/console/keys/new", data={"csrf": csrf, "name": "after-sign-out"})
        assert refused.status_code == 401
    assert console.api("/v1/admin/keys/after-sign-out", console.admin_key).status_code == 404


def test_serve_no_console_turns_it_off(console: Console, start_server) -> None:  # type: ignore[no-untyped-def]
    off = start_server(console.db_url, "--no-console")
    answer = off.get("/console/sign-in")
    assert answer.status_code == 404 and answer.json()["error"]["message"] == "Invalid URL (GET /console/sign-in)"
    assert off.get("/v1/models", console.read_key).status_code == 200


def test_no_page_logs_an_error_or_a_csp_violation(console: Console, signed) -> None:  # type: ignore[no-untyped-def]
    """Every page under the console's content security policy: no script error, no refused resource, nothing
    in the browser's console. The new-key form's name pattern was not a valid regular expression for the
    browser (`-` unescaped in a class under the `v` flag): an error on the keys page, and no check at all."""
    page = open_page(signed, console)
    logged: list[str] = []
    page.on("console", lambda message: logged.append(f"{page.url}: {message.text}") if message.type in (
        "error", "warning") and "favicon" not in message.text and "status of 404" not in message.text else None)
    page.on("pageerror", lambda error: logged.append(f"{page.url}: {error}"))
    for path in ("/console/models", "/console/models?q=model-0001&owner=owner-1", "/console/models/new",
                 "/console/model?id=bulk%2Fmodel-00001", "/console/keys", "/console/keys?all=1",
                 "/console/key?name=admin&model=bulk%2Fmodel-00001", "/console/upstreams", "/console/traffic",
                 "/console/changes", "/console/apply", "/console/no-such-page"):
        page.goto(console.base + path)
        page.wait_for_load_state("load")
        if path == "/console/keys":
            name = page.get_by_label("Name")
            name.fill("has a space")  # refused by the form before it is sent
            assert name.evaluate("field => field.validity.patternMismatch") is True
            name.fill("fine-name.1@x")
            assert name.evaluate("field => field.validity.valid") is True
    assert logged == []


def test_a_form_is_sent_once(console: Console, signed) -> None:  # type: ignore[no-untyped-def]
    """A second click on Create key while the first was on its way (a slow network) sent the form again: the
    key was made by the first, the second was refused ("already exists"), and its answer replaced the first's,
    the new key's secret with it."""
    page = open_page(signed, console, "/console/keys")
    sent: list[str] = []
    page.on("request", lambda request: sent.append(request.url) if request.method == "POST" else None)
    network = signed.new_cdp_session(page)
    network.send("Network.enable")
    network.send("Network.emulateNetworkConditions", {"offline": False, "latency": 800, "downloadThroughput": -1,
                                                      "uploadThroughput": -1})
    page.get_by_label("Name").fill("clicked-twice")
    button = page.get_by_role("button", name="Create key")
    button.scroll_into_view_if_needed()
    box = button.bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + 5, box["y"] + 5)
    time.sleep(0.3)  # the answer is still on its way
    page.mouse.click(box["x"] + 5, box["y"] + 5)
    secret = page.get_by_label("Secret of clicked-twice").input_value()
    assert secret.startswith("sk-mdx-") and sent == [console.base + "/console/keys/new"]
    assert console.api("/v1/models", secret).status_code == 200
