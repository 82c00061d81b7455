"""Discovery's parts on their own: settings validation, the defensive fetch against a misbehaving upstream,
reading metadata out of answers, the rules a sync applies to the catalog, and the poll lease."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modeldex.catalog.entities import Alias, Model, parse
from modeldex.catalog.errors import InvalidInput
from modeldex.catalog.seed import seed_models
from modeldex.catalog.service import Catalog
from modeldex.catalog.upstreams import Upstream
from modeldex.discovery.answer import InvalidAnswer, metadata_of, to_models
from modeldex.discovery.fetch import UpstreamError, fetch_models
from modeldex.discovery.health import UpstreamHealth
from modeldex.discovery.sync import apply_answer
from modeldex.store import SqlStore, open_store

from .fake_upstream import FakeUpstream

SECRET = "sk-upstream-secret-0123456789"


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream([{"id": "llama-3", "object": "model", "owned_by": "vllm", "max_model_len": 8192},
                             {"id": "qwen-2", "object": "model"}])
    yield upstream
    upstream.close()


@pytest.fixture
def store(db_url: str) -> Iterator[SqlStore]:
    store = open_store(db_url, seed=seed_models())
    yield store
    store.close()


# --- settings ----------------------------------------------------------------------------------------


def upstream(**fields) -> Upstream:
    return parse(Upstream, {"name": "up", "base_url": "http://127.0.0.1:9/v1", **fields})


def test_durations_and_defaults() -> None:
    assert (upstream().interval, upstream().grace, upstream().timeout) == (60, 600, 10)
    assert upstream(interval="5m", grace="1h", timeout="3s").document()["interval"] == 300
    assert upstream(interval=90, grace="0s").grace == 0
    assert upstream(interval="2h").interval == 7200


@pytest.mark.parametrize(("fields", "param"), [
    ({"interval": "1s"}, "interval"),  # polls no more often than every 5 s
    ({"interval": "soon"}, "interval"),
    ({"grace": -1}, "grace"),
    ({"timeout": "5m"}, "timeout"),
    ({"api_key_env": "sk-live-abc"}, "api_key_env"),  # a key where its variable's name belongs
    ({"api_key_env": "lower_case"}, "api_key_env"),
    ({"base_url": "http://user:pass@host/v1"}, "base_url"),  # credentials never go in the catalog
    ({"base_url": "ftp://host/v1"}, "base_url"),
    ({"base_url": "http://host/v1?key=x"}, "base_url"),
    ({"prefix": "has space/"}, "prefix"),
    ({"include": ["a b"]}, "include.0"),
    ({"name": "no/slash"}, "name"),
    ({"colour": "blue"}, "colour"),
])
def test_invalid_settings_name_the_field(fields: dict, param: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        upstream(**fields)
    assert caught.value.field == param


def test_globs_apply_to_the_upstreams_own_ids() -> None:
    u = upstream(prefix="team/", include=["llama-*", "qwen-*"], exclude=["*-base"])
    assert [u.yields(i) for i in ("llama-3", "qwen-2", "llama-3-base", "mistral")] == [True, True, False, False]
    assert u.catalog_id("llama-3") == "team/llama-3"
    assert u.still_yields("team/llama-3", u) and not u.still_yields("team/mistral", u)
    # Under another prefix, or none, a model discovered under the old one is not what the upstream yields
    # now (its id would differ): it leaves at once, as with a narrower filter.
    unprefixed, other = upstream(include=["llama-*"]), upstream(prefix="lab/", include=["llama-*"])
    assert not unprefixed.still_yields("team/llama-3", u) and not other.still_yields("team/llama-3", u)
    assert unprefixed.still_yields("llama-3", unprefixed) and u.still_yields("team/llama-3", unprefixed) is False


# --- fetch: what a misbehaving upstream gets ---------------------------------------------------------


def test_a_good_answer_with_the_key_in_the_header(fake: FakeUpstream) -> None:
    fetched = fetch_models(fake.base_url, SECRET, timeout=5)
    assert [e["id"] for e in fetched.entries] == ["llama-3", "qwen-2"]
    assert fake.authorizations == [f"Bearer {SECRET}"] and fetched.attempts == 1


@pytest.mark.parametrize(("mode", "expected"), [
    ("html", "not JSON"),
    ("huge", "more than the 4194304 bytes allowed"),
    ("huge-chunked", "larger than the 4194304 bytes allowed"),
    ("control", r"data[2].id 'evil\x1b[31mred': model id contains characters that are not allowed"),
    ("not-a-list", 'expected a JSON object with a "data" array'),
    ("redirect", "HTTP 302"),
])
def test_bad_answers_are_refused_whole_without_retrying(fake: FakeUpstream, mode: str, expected: str) -> None:
    fake.mode = mode
    started = time.monotonic()
    with pytest.raises(UpstreamError) as caught:
        fetch_models(fake.base_url, None, timeout=5)
    assert expected in str(caught.value)
    assert str(caught.value).isprintable()
    assert fake.requests == 1 and time.monotonic() - started < 3


@pytest.mark.parametrize(("mode", "expected"), [
    ("stall", "no answer from"),  # 30 s of silence
    ("drip", "took longer than 1s"),  # a byte every 0.2 s: each read is quick, the whole is not
    ("unavailable", "HTTP 503"),
])
def test_slow_and_failing_upstreams_are_retried_then_given_up(fake: FakeUpstream, mode: str, expected: str) -> None:
    fake.mode = mode
    started = time.monotonic()
    with pytest.raises(UpstreamError) as caught:
        fetch_models(fake.base_url, None, timeout=1, attempts=2)
    assert expected in str(caught.value) and "after 2 attempts" in str(caught.value)
    assert fake.requests == 2 and time.monotonic() - started < 5


def test_an_upstream_echoing_the_key_never_gets_it_into_the_error(fake: FakeUpstream) -> None:
    fake.mode = "echo-key"
    with pytest.raises(UpstreamError) as caught:
        fetch_models(fake.base_url, SECRET, timeout=5)
    assert "HTTP 401" in str(caught.value) and "[redacted]" in str(caught.value)
    assert SECRET not in str(caught.value) and fake.requests == 1  # a 401 is not retried


def test_an_unreachable_upstream(fake: FakeUpstream) -> None:
    fake.close()
    with pytest.raises(UpstreamError, match=r"cannot reach .* \(after 2 attempts\)"):
        fetch_models(fake.base_url, None, timeout=1, attempts=2)


# --- answers into models -----------------------------------------------------------------------------


def test_metadata_from_vllm_openrouter_and_litellm_shapes() -> None:
    assert metadata_of({"id": "m", "max_model_len": 32768}) == {"context_length": 32768}
    assert metadata_of({"id": "m", "max_input_tokens": 131072}) == {"context_length": 131072}
    openrouter = {
        "id": "m", "name": "M", "context_length": 200000,
        "architecture": {"input_modalities": ["text", "image"], "output_modalities": ["text"]},
        "pricing": {"prompt": "0.000003", "completion": "0.000015", "image": "0.0048"},
        "top_provider": {"context_length": 200000, "max_completion_tokens": 8192},
    }
    assert metadata_of(openrouter) == {
        "name": "M", "context_length": 200000, "max_output_tokens": 8192,
        "input_modalities": ["text", "image"], "output_modalities": ["text"],
        "pricing": {"prompt": "0.000003", "completion": "0.000015"},
    }
    assert metadata_of({"id": "m", "context_length": -5, "max_model_len": True, "pricing": "free"}) == {}
    assert metadata_of({"id": "m", "name": "clear\x1b[2J", "description": "two\nlines"}) == {"description": "two\nlines"}


def test_models_get_prefix_owner_and_valid_metadata_only() -> None:
    u = upstream(prefix="v/", exclude=["skip-*"])
    entries = [
        {"id": "a", "owned_by": "vllm", "created": 1700000000, "max_model_len": 4096},
        {"id": "b", "pricing": {"prompt": "cheap", "completion": "0.1"}},  # one bad price: that price goes
        {"id": "skip-me"},
        {"id": "a", "owned_by": "someone else"},  # listed twice: the first counts
    ]
    models = {m.id: m for m in to_models(u, entries, now=1800000000.5)}
    assert list(models) == ["v/a", "v/b"]
    assert (models["v/a"].owned_by, models["v/a"].created, models["v/a"].context_length) == ("vllm", 1700000000, 4096)
    assert models["v/b"].owned_by == "up" and models["v/b"].created == 1800000000  # upstream's name; first seen
    assert models["v/b"].pricing is None and {m.source for m in models.values()} == {"up"}
    assert to_models(upstream(owned_by="platform"), entries[:1], 0)[0].owned_by == "platform"


def test_an_id_too_long_once_prefixed_rejects_the_answer() -> None:
    with pytest.raises(InvalidAnswer, match="too long once prefixed"):
        to_models(upstream(prefix="p" * 64), [{"id": "x" * 250}], 0)


# --- the rules a sync applies ------------------------------------------------------------------------


def sync(store: SqlStore, up: Upstream, ids: list[str] | None, now: float):
    models = None if ids is None else to_models(up, [{"id": i} for i in ids], now)
    with store.write(f"upstream:{up.name}") as writer:
        return apply_answer(writer, up, models, now)


def ids_from(store: SqlStore, source: str) -> dict[str, float | None]:
    return {m.id: m.stale_since for m in store.all(Model) if m.source == source}


def test_operator_models_win_and_the_first_upstream_keeps_an_id(store: SqlStore) -> None:
    a, b = upstream(name="a", grace=60), upstream(name="b", grace=60)
    Catalog(store).create("upstream", a.document())
    Catalog(store).create("upstream", b.document())
    changes = sync(store, a, ["MiniMax-M3", "shared", "only-a"], now=1000)
    assert changes.added == ["shared", "only-a"] and changes.shadowed == [{"id": "MiniMax-M3", "by": "operator"}]
    assert store.get(Model, "MiniMax-M3").source is None  # type: ignore[union-attr]
    changes = sync(store, b, ["shared", "only-b"], now=1000)
    assert changes.added == ["only-b"] and changes.shadowed == [{"id": "shared", "by": "upstream a"}]
    # An operator adding an id an upstream discovered makes it theirs; the upstream leaves it alone.
    Catalog(store).create("model", {"id": "only-a", "owned_by": "acme"})
    assert sync(store, a, ["shared", "only-a"], now=1001).shadowed == [{"id": "only-a", "by": "operator"}]
    assert store.get(Model, "only-a").owned_by == "acme"  # type: ignore[union-attr]


def test_stale_then_removed_after_grace_and_every_step_in_the_feed(store: SqlStore) -> None:
    up = upstream(grace=60)
    Catalog(store).create("upstream", up.document())
    sync(store, up, ["x", "y"], now=1000)
    created = store.get(Model, "x").created
    assert sync(store, up, None, now=1010).stale == ["x", "y"]  # the upstream fails: kept, stale
    assert ids_from(store, "up") == {"x": 1010, "y": 1010}
    changes = sync(store, up, ["x"], now=1020)  # back, without y: x is fresh again, y stays stale
    assert changes.updated == ["x"] and changes.next_expiry == 1070
    assert ids_from(store, "up") == {"x": None, "y": 1010}
    assert store.get(Model, "x").created == created  # type: ignore[union-attr]
    assert sync(store, up, ["x"], now=1069).removed == []
    assert sync(store, up, ["x"], now=1070).removed == ["y"]  # 60 s unconfirmed
    feed = [(c.actor, c.op, c.id) for c in store.changes(0, 1000) if c.actor == "upstream:up"]
    assert ("upstream:up", "delete", "y") in feed and ("upstream:up", "update", "y") in feed
    assert sync(store, up, ["x"], now=1080).version is None  # nothing changed: no new version


def test_grace_zero_removes_at_once_but_never_a_model_an_alias_needs(store: SqlStore) -> None:
    up = upstream(grace=0)
    Catalog(store).create("upstream", up.document())
    sync(store, up, ["x", "y"], now=1000)
    Catalog(store).create("alias", Alias(id="x-latest", target="x").document())
    changes = sync(store, up, [], now=1001)
    assert changes.removed == ["y"] and changes.kept == ["x"]


def test_narrowing_or_removing_an_upstream_removes_its_models_at_once(store: SqlStore) -> None:
    up = upstream(grace=600)
    catalog = Catalog(store, actor="cli:test")
    catalog.create("upstream", up.document())
    sync(store, up, ["keep-1", "drop-1"], now=1000)
    catalog.update("upstream", "up", {"exclude": ["drop-*"]})
    assert ids_from(store, "up") == {"keep-1": None}
    # A prefix given, then taken away: the ids under the old prefix leave at once each time.
    catalog.update("upstream", "up", {"prefix": "team/"})
    assert ids_from(store, "up") == {}
    sync(store, Upstream.model_validate({**up.document(), "prefix": "team/", "exclude": ["drop-*"]}),
         ["keep-1"], now=1100)
    assert ids_from(store, "up") == {"team/keep-1": None}
    catalog.update("upstream", "up", {"prefix": None})
    assert ids_from(store, "up") == {}
    catalog.delete("upstream", "up")
    assert ids_from(store, "up") == {} and store.get(Model, "MiniMax-M3") is not None


def test_operator_input_cannot_claim_a_source(store: SqlStore) -> None:
    with pytest.raises(InvalidInput, match="source: set by discovery only"):
        Catalog(store).create("model", {"id": "m", "source": "up"})
    with pytest.raises(InvalidInput, match="stale_since"):
        Catalog(store).update("model", "MiniMax-M3", {"stale_since": 5})


# --- the poll lease ----------------------------------------------------------------------------------


def test_one_claimant_wins_the_lease_among_many(store: SqlStore) -> None:
    Catalog(store).create("upstream", upstream().document())
    now = time.time()
    assert store.due_upstreams(now) == ["up"]
    wins: list[str] = []
    barrier = threading.Barrier(8)

    def claim(owner: str) -> None:
        barrier.wait()
        if store.claim_upstream("up", owner, now, lease_s=30):
            wins.append(owner)

    threads = [threading.Thread(target=claim, args=(f"worker-{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1
    assert store.due_upstreams(now) == [] and not store.claim_upstream("up", "late", now, 30, force=True)
    assert store.upstream_health(now)["up"].polling_by == wins[0]
    store.finish_upstream("up", wins[0], UpstreamHealth(last_attempt_at=now), next_poll_at=now + 60)
    assert store.due_upstreams(now) == [] and store.due_upstreams(now + 61) == ["up"]
    assert not store.claim_upstream("up", "early", now + 1, 30)  # not due yet
    assert store.claim_upstream("up", "forced", now + 1, 30, force=True)  # sync-now does not wait for due
    assert store.claim_upstream("up", "after-expiry", now + 32, 30, force=True)  # a dead holder's lease ends


def test_editing_an_upstream_makes_it_due_at_once(store: SqlStore) -> None:
    Catalog(store).create("upstream", upstream().document())
    now = time.time()
    assert store.claim_upstream("up", "w", now, 30)
    Catalog(store).update("upstream", "up", {"prefix": "p/"})  # while it is being polled
    store.finish_upstream("up", "w", UpstreamHealth(last_attempt_at=now), next_poll_at=now + 60)
    assert store.due_upstreams(now + 1) == ["up"]


@pytest.mark.parametrize("mode", ["echo-key", "echo-key-plain", "echo-key-encoded"])
def test_an_echoed_key_is_redacted_in_every_form(fake: FakeUpstream, mode: str) -> None:
    """Quoted whole, cut to the first 40 characters of a non-JSON answer, URL-encoded, or in base64 (of the
    key, of "Bearer key", of "user:key"): never in the error."""
    import base64
    from urllib.parse import quote

    fake.mode = mode
    with pytest.raises(UpstreamError) as caught:
        fetch_models(fake.base_url, SECRET, timeout=5, attempts=1)
    message = str(caught.value)
    assert "[redacted]" in message, message
    for form in (SECRET, SECRET[:12], quote(SECRET, safe=""), base64.b64encode(SECRET.encode()).decode()[:12],
                 base64.b64encode(f"Bearer {SECRET}".encode()).decode()[12:24]):
        assert form not in message, (form, message)


@pytest.mark.parametrize(("value", "sent"), [(SECRET + "\n", SECRET), ("\t" + SECRET + "\r\n", SECRET)])
def test_keys_are_read_without_surrounding_whitespace(store: SqlStore, fake: FakeUpstream, value: str,
                                                       sent: str) -> None:
    from modeldex.discovery.sync import new_owner, poll_once

    upstream = Catalog(store).create("upstream", {"name": "k8s", "base_url": fake.base_url,
                                                  "api_key_env": "K8S_KEY"})[0]
    owner = new_owner()
    assert store.claim_upstream("k8s", owner, time.time(), 60, force=True)
    assert poll_once(store, upstream, owner, environ={"K8S_KEY": value}).ok
    assert fake.authorizations[-1] == f"Bearer {sent}"


@pytest.mark.parametrize("value", ["sk-clé-0123456789", "sk-two words", "sk-\x00nul", "  "])
def test_a_key_no_header_can_carry_fails_the_poll_cleanly(store: SqlStore, fake: FakeUpstream, value: str) -> None:
    """It was a 500 from the sync with the lease kept (non-ASCII), or the whole key in last_error."""
    from modeldex.discovery.sync import new_owner, poll_once

    upstream = Catalog(store).create("upstream", {"name": "odd", "base_url": fake.base_url,
                                                  "api_key_env": "ODD_KEY"})[0]
    owner = new_owner()
    assert store.claim_upstream("odd", owner, time.time(), 60, force=True)
    result = poll_once(store, upstream, owner, environ={"ODD_KEY": value})
    assert not result.ok and "ODD_KEY" in (result.error or "") and fake.requests == 0
    health = store.upstream_health(time.time())["odd"]
    assert health.last_error == result.error and (not value.strip() or value.strip() not in health.last_error)
    assert store.claim_upstream("odd", new_owner(), time.time(), 60, force=True)  # the lease was given back


def test_a_stopping_poller_lets_a_poll_finish_writing_its_answer(store: SqlStore, fake: FakeUpstream,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A poll writes the models, then the health and the key's fingerprint. A server stopped between the two
    kept the models and lost the fingerprint (seen under load: a restart with a rotated key then did not
    poll at once). stop() waits for a poll that is writing."""
    from modeldex.discovery.poller import Poller

    Catalog(store).create("upstream", {"name": "slow", "base_url": fake.base_url, "api_key_env": "SLOW_KEY"})
    monkeypatch.setenv("SLOW_KEY", SECRET)
    writing, go_on = threading.Event(), threading.Event()
    finish_upstream = store.finish_upstream

    def held_finish_upstream(*args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        writing.set()
        go_on.wait(10)
        finish_upstream(*args, **kwargs)

    monkeypatch.setattr(store, "finish_upstream", held_finish_upstream)
    poller = Poller(store, tick=0.05)
    poller.start()
    assert writing.wait(10), "the poll did not come"
    assert "llama-3" in {model.id for model in store.all(Model)}  # the models are in; the fingerprint is next
    stopping = threading.Thread(target=poller.stop)
    stopping.start()
    stopping.join(0.3)
    assert stopping.is_alive(), "stop() did not wait for the poll's second write"
    go_on.set()
    stopping.join(10)
    assert not stopping.is_alive()
    assert store.upstream_credentials()["slow"] is not None
    assert store.claim_upstream("slow", "another", time.time(), 60, force=True)  # the lease was given back


def test_an_answer_that_comes_after_stop_is_not_written(store: SqlStore, fake: FakeUpstream) -> None:
    from modeldex.discovery.sync import new_owner, poll_once

    upstream = Catalog(store).create("upstream", {"name": "late", "base_url": fake.base_url})[0]
    owner = new_owner()
    assert store.claim_upstream("late", owner, time.time(), 60, force=True)
    result = poll_once(store, upstream, owner, recording=lambda: contextlib.nullcontext(False))
    assert not result.ok and fake.requests == 1
    assert "llama-3" not in {model.id for model in store.all(Model)}
    assert store.upstream_credentials()["late"] is None


def test_the_cli_clears_an_upstreams_filters_and_refuses_a_prefix_no_id_can_take(tmp_path: Path) -> None:
    """`--clear include|exclude` empties the list (it failed: "cannot be removed"); a prefix that makes every
    id invalid (`../`, `a//`) is refused when it is set, not at every poll."""
    from click.testing import CliRunner

    from modeldex.cli.main import cli

    url = f"sqlite:///{tmp_path}/cli.db"
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(cli, [*args, "--database-url", url])
        return result.exit_code, result.output

    assert run("upstreams", "add", "u", "--base-url", "http://127.0.0.1:9/v1", "--include", "llama-*",
               "--exclude", "*-base")[0] == 0
    assert run("upstreams", "update", "u", "--clear", "exclude", "--clear", "include")[0] == 0
    stored = open_store(url).get(Upstream, "u")
    assert stored is not None and (stored.include, stored.exclude) == ((), ())
    assert run("upstreams", "add", "routed", "--base-url", "http://127.0.0.1:9/v1", "--routing-only")[0] == 0
    code, output = run("upstreams", "sync-now", "routed")
    assert code == 1 and "routing only: it is never polled" in output  # it reported "synced: 0 models"
    for reserved in ("operator", "upstream"):  # the console's Source filter means these two otherwise
        code, output = run("upstreams", "add", reserved, "--base-url", "http://127.0.0.1:9/v1")
        assert code == 1 and "is reserved" in output, output
    for prefix in ("../", "./", "/", "a//", "x/./"):
        code, output = run("upstreams", "update", "u", "--prefix", prefix)
        assert code == 1 and "prefix" in output, (prefix, output)


# --- the shapes real servers answer ------------------------------------------------------------------


def _answering(pages: dict[str | None, object], seen: list[tuple[str | None, str | None]]):
    """A transport answering GET /v1/models from `pages`, by the `after_id` asked for (None, or one it does not
    know: the first page, as a server that ignores `after_id` does)."""
    import httpx

    def handle(request: httpx.Request) -> httpx.Response:
        after = request.url.params.get("after_id")
        seen.append((after, request.headers.get("authorization")))
        return httpx.Response(200, json=pages.get(after, pages[None]))

    return httpx.MockTransport(handle)


def test_a_list_in_pages_is_read_whole_with_the_key_on_every_page() -> None:
    """Anthropic's list (and MiniMax's Anthropic-compatible one) comes 20 models a page, with `has_more`
    and `last_id`: only the first page was taken, so every model on the others was marked stale, then
    removed after the grace period."""
    page = lambda ids, more: {"data": [{"type": "model", "id": i} for i in ids], "has_more": more,  # noqa: E731
                              "first_id": ids[0], "last_id": ids[-1]}
    seen: list = []
    pages = {None: page(["a", "b"], True), "b": page(["c", "d"], True), "d": page(["e"], False)}
    fetched = fetch_models("http://up.test/v1", SECRET, timeout=5, transport=_answering(pages, seen))
    assert [e["id"] for e in fetched.entries] == ["a", "b", "c", "d", "e"]
    assert seen == [(None, f"Bearer {SECRET}"), ("b", f"Bearer {SECRET}"), ("d", f"Bearer {SECRET}")]


@pytest.mark.parametrize(("pages", "expected"), [
    ({None: {"data": [{"id": "a"}], "has_more": True}},  # no last_id: the last entry's id goes on
     "the pages do not advance"),  # ... and a server that ignores after_id sends page one again
    ({None: {"data": [], "has_more": True}}, 'no "last_id" to ask for the next page from'),
    ({None: {"data": [{"id": "a"}], "has_more": True, "last_id": 7}}, 'no "last_id"'),
])
def test_a_list_in_pages_that_cannot_be_followed_is_refused_not_cut_short(pages: dict, expected: str) -> None:
    seen: list = []
    with pytest.raises(UpstreamError, match=expected):
        fetch_models("http://up.test/v1", None, timeout=5, attempts=1, transport=_answering(pages, seen))
    assert len(seen) <= 2


@pytest.mark.parametrize(("answer", "ids"), [
    ([{"id": "meta-llama/Llama-3.3-70B-Instruct-Turbo", "object": "model", "type": "chat",
       "display_name": "Llama 3.3 70B", "context_length": 131072}], ["meta-llama/Llama-3.3-70B-Instruct-Turbo"]),
    ({"object": "list", "data": None}, []),  # Ollama with no model pulled (a Go nil slice)
])
def test_togethers_bare_array_and_ollamas_null_list_are_model_lists(answer: object, ids: list[str]) -> None:
    """Together answers the array alone; an Ollama with no models answers `"data": null`. Both were "not a
    model list", so Together could not be an upstream, and an emptied Ollama showed as failing."""
    fetched = fetch_models("http://up.test/v1", None, timeout=5, transport=_answering({None: answer}, []))
    assert [e["id"] for e in fetched.entries] == ids


def test_created_in_milliseconds_iso_or_float_is_read_as_seconds() -> None:
    """`created` is Unix seconds. Milliseconds were served as they came (the year 56327 for 1715367049000),
    an ISO string or Anthropic's `created_at` were ignored for the time of the first poll."""
    entries = [
        {"id": "ms", "created": 1715367049000},
        {"id": "float", "created": 1715367049.7},
        {"id": "iso", "created": "2024-05-10T18:50:49Z"},
        {"id": "anthropic", "type": "model", "created_at": "2024-05-10T18:50:49Z", "display_name": "A"},
        {"id": "seconds", "created": 1715367049},
        {"id": "junk", "created": "yesterday"},
        {"id": "micro", "created": 1715367049000000},  # no unit reading makes sense of it: first seen
        {"id": "negative", "created": -5},
    ]
    created = {m.id: m.created for m in to_models(upstream(), entries, now=1800000000.5)}
    assert created == {"ms": 1715367049, "float": 1715367049, "iso": 1715367049, "anthropic": 1715367049,
                       "seconds": 1715367049, "junk": 1800000000, "micro": 1800000000, "negative": 1800000000}


def test_context_lengths_of_groq_mistral_and_vllm_lora_adapters() -> None:
    """Groq's `context_window` and `max_completion_tokens`, Mistral's `max_context_length`; a vLLM LoRA adapter
    (listed with its base model as `parent`, `max_model_len` null) runs with its base model's context."""
    assert metadata_of({"id": "llama-3.3-70b-versatile", "context_window": 131072,
                        "max_completion_tokens": 32768}) == {"context_length": 131072, "max_output_tokens": 32768}
    assert metadata_of({"id": "mistral-large-latest", "max_context_length": 131072}) == {"context_length": 131072}
    vllm = [
        {"id": "base", "object": "model", "owned_by": "vllm", "root": "/models/base", "parent": None,
         "max_model_len": 32768, "permission": [{"id": "modelperm-1", "object": "model_permission"}]},
        {"id": "sql-lora", "object": "model", "owned_by": "vllm", "root": "/loras/sql", "parent": "base",
         "max_model_len": None, "permission": [{"id": "modelperm-2", "object": "model_permission"}]},
        {"id": "orphan-lora", "parent": "not-listed", "max_model_len": None},
    ]
    contexts = {m.id: m.context_length for m in to_models(upstream(exclude=["base"]), vllm, 0)}
    assert contexts == {"sql-lora": 32768, "orphan-lora": None}  # from its base, even when that is filtered out


def test_a_redirect_names_the_base_url_to_set(fake: FakeUpstream) -> None:
    """The hint named the redirect's target, `.../v1/models`: set as base_url, that polled `.../models/models`."""
    fake.mode = "redirect"
    with pytest.raises(UpstreamError) as caught:
        fetch_models(fake.base_url, None, timeout=5)
    assert "set base_url to http://127.0.0.1:9/v1)" in str(caught.value)


@pytest.mark.parametrize(("variable", "value", "expected"), [
    ("ALL_PROXY", "socks5://127.0.0.1:9", "socksio"),  # httpx needs its [socks] extra for a SOCKS proxy
    ("NO_PROXY", "[::1]:8000", "Invalid port"),  # httpx cannot parse a bracketed IPv6 host with a port
])
def test_proxy_settings_httpx_cannot_use_fail_the_poll_with_their_names(monkeypatch: pytest.MonkeyPatch,
                                                                          variable: str, value: str,
                                                                          expected: str) -> None:
    """They raised from making the client, outside the errors a poll expects: "unexpected error while polling
    (ImportError); see the server log", with a traceback, for every upstream."""
    import importlib.util

    if variable == "ALL_PROXY" and importlib.util.find_spec("socksio") is not None:
        pytest.skip("httpx can use a SOCKS proxy here")
    monkeypatch.setenv(variable, value)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    with pytest.raises(UpstreamError, match=f"proxy settings in the environment .*{expected}"):
        fetch_models("http://127.0.0.1:9/v1", None, timeout=1, attempts=1)
