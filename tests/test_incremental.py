"""Catching up change by change gives exactly what a full reload gives: the state, every view's bytes and
ETags, and a running server's answers compared with a freshly started one's."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from modeldex.api.render import RenderedCatalog
from modeldex.catalog.entities import Alias, Group, Model, new_model
from modeldex.catalog.incremental import apply_delta
from modeldex.catalog.live import LiveCatalog
from modeldex.catalog.policy import ALL_MODELS, AccessPolicy
from modeldex.catalog.seed import seed_models
from modeldex.catalog.service import Catalog
from modeldex.catalog.state import CatalogState
from modeldex.store import SqlStore, open_store

from .conftest import Server, create_key, execute_sql, run_cli, wait_until

NOW = 1_800_000_000.0
POLICIES = {
    "all": ALL_MODELS,
    "chat": AccessPolicy(groups=("chat",)),
    "acme": AccessPolicy(patterns=("acme/*",)),
    "mixed": AccessPolicy(groups=("chat",), patterns=("MiniMax-M2*",)),
}


@pytest.fixture
def store(db_url: str) -> Iterator[SqlStore]:
    store = open_store(db_url, seed=seed_models())
    catalog = Catalog(store)
    catalog.create("group", {"name": "chat", "members": ["MiniMax-M3*"]})
    for name, policy in POLICIES.items():
        catalog.create_key(name, policy=policy)
    yield store
    store.close()


def assert_same_catalog(caught_up: RenderedCatalog, fresh: RenderedCatalog) -> None:
    assert (caught_up.version, caught_up.expires_at) == (fresh.version, fresh.expires_at)
    assert caught_up.keys == fresh.keys
    assert caught_up.models == fresh.models
    assert (caught_up.aliases, caught_up.groups) == (fresh.aliases, fresh.groups)
    assert caught_up.upstreams == fresh.upstreams
    for policy in POLICIES.values():
        mine, theirs = caught_up.view(policy), fresh.view(policy)
        assert mine.etag == theirs.etag, policy
        assert (mine.bodies, mine.list_body) == (theirs.bodies, theirs.list_body), policy
        assert mine.expanded() == theirs.expanded(), policy


class Follower:
    """A state and its rendered catalog, kept up to date from deltas only, checked after every step
    against a full load."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.state = store.load_state()
        self.rendered = RenderedCatalog(self.state, NOW)
        self.steps = 0

    def catch_up(self) -> None:
        # Views exist before the change (so they are carried over, not built afresh); every other step
        # the metadata bodies too, so both the rendered and the lazy paths are taken.
        for policy in POLICIES.values():
            view = self.rendered.view(policy)
            if self.steps % 2:
                view.expanded()
        self.steps += 1
        delta = self.store.load_delta(self.state.version, 1000)
        assert delta is not None and delta.version == self.store.current_version()
        state = apply_delta(self.state, delta)
        full = self.store.load_state()
        assert state == full
        assert dict(state.models_by_id) == {m.id: m for m in full.models}
        self.rendered = self.rendered.updated(state, delta, NOW)
        self.state = state
        assert_same_catalog(self.rendered, RenderedCatalog(full, NOW))


def write(store: SqlStore, *operations: Callable[[Any], Any]) -> None:
    with store.write("test") as writer:
        for operation in operations:
            operation(writer)


def test_every_kind_of_change_caught_up_equals_a_full_load(store: SqlStore) -> None:
    follow = Follower(store)
    catalog = Catalog(store)
    steps: list[Callable[[], Any]] = [
        lambda: catalog.create("model", {"id": "acme/a", "created": 100, "owned_by": "acme"}),
        lambda: catalog.create("model", {"id": "acme/b", "created": 200, "context_length": 8192,
                                         "pricing": {"prompt": "0.000001"}, "shutdown_date": "2030-01-01"}),
        lambda: catalog.create("model", {"id": "acme/old", "created": 300, "shutdown_date": "2020-01-01"}),
        lambda: catalog.update("model", "acme/a", {"created": 1_900_000_000, "name": "A"}),  # to the top
        lambda: catalog.create("alias", {"id": "latest", "target": "acme/a"}),
        lambda: catalog.create("alias", {"id": "secret", "target": "acme/b", "hidden": True}),
        lambda: catalog.update("alias", "latest", {"target": "acme/b"}),
        lambda: catalog.update("model", "acme/b", {"created": 50, "owned_by": "other"}),  # moves its aliases
        lambda: catalog.update("alias", "secret", {"hidden": False}),
        lambda: catalog.update("group", "chat", {"members": ["acme/*", "MiniMax-M2.5"]}),
        lambda: catalog.create("group", {"name": "unused", "members": ["x*"]}),
        lambda: catalog.update_key("acme", policy={"patterns": ["acme/b", "MiniMax-M3"]}),
        lambda: catalog.create_key("late", policy={"groups": ["chat"]}),
        lambda: catalog.revoke_key("late"),
        lambda: catalog.delete("alias", "secret"),
        lambda: catalog.delete("model", "acme/old"),
        lambda: catalog.delete("group", "unused"),
        # several entities of several kinds in one version
        lambda: write(store, lambda w: w.create(new_model("acme/c", created=1)),
                      lambda w: w.create(Alias(id="c-latest", target="acme/c")),
                      lambda w: w.update(Group(name="chat", members=("acme/c",)))),
        # more changes than are bisected one by one
        lambda: write(store, *[lambda w, n=n: w.create(new_model(f"bulk/{n:03d}", created=n % 7))
                               for n in range(100)]),
        lambda: write(store, *[lambda w, n=n: w.delete(Model, f"bulk/{n:03d}") for n in range(0, 100, 3)]),
        lambda: catalog.delete("alias", "latest"),
        # upstreams are served state too (which upstream serves a model, with no database read)
        lambda: catalog.create("upstream", {"name": "vllm", "base_url": "http://127.0.0.1:9/v1"}),
        lambda: catalog.update("upstream", "vllm", {"prefix": "v/", "interval": "5m"}),
        lambda: catalog.create("upstream", {"name": "ollama", "base_url": "http://127.0.0.1:9/v1"}),
        lambda: catalog.delete("upstream", "vllm"),
    ]
    for step in steps:
        step()
        follow.catch_up()


def test_several_versions_at_once_including_a_model_made_and_removed_between(store: SqlStore) -> None:
    follow = Follower(store)
    catalog = Catalog(store)
    catalog.create("model", {"id": "brief", "created": 5})
    catalog.create("model", {"id": "stays", "created": 6})
    catalog.update("model", "MiniMax-M3", {"description": "changed twice"})
    catalog.update("model", "MiniMax-M3", {"description": "changed again"})
    catalog.delete("model", "brief")
    catalog.create_key("temp")
    catalog.revoke_key("temp")
    catalog.create_key("temp")  # a new key of the same name
    follow.catch_up()


def test_a_shutdown_passing_between_versions(store: SqlStore) -> None:
    Catalog(store).create("model", {"id": "doomed", "shutdown_date": "2027-02-01T08:00:00Z"})
    state = store.load_state()
    before = RenderedCatalog(state, NOW)
    assert before.expires_at is not None and "doomed" in before.view(ALL_MODELS).bodies
    Catalog(store).create("model", {"id": "newcomer"})
    delta = store.load_delta(state.version, 1000)
    assert delta is not None
    later = before.expires_at + 1
    caught_up = before.updated(apply_delta(state, delta), delta, later)
    assert_same_catalog(caught_up, RenderedCatalog(store.load_state(), later))
    assert "doomed" not in caught_up.view(ALL_MODELS).bodies


def test_the_feed_must_vouch_for_every_version(store: SqlStore, db_url: str) -> None:
    state = store.load_state()
    version = state.version
    Catalog(store).create("model", {"id": "one"})
    Catalog(store).create("model", {"id": "two"})
    assert store.load_delta(version, 1000) is not None
    later = store.load_delta(version + 1, 1000)
    assert later is not None
    with pytest.raises(ValueError):
        apply_delta(state, later)  # a delta applies to the version it starts from only
    assert store.load_delta(version, 1) is None  # more than asked for: a full load is cheaper
    assert store.load_delta(version + 5, 1000) is None  # ahead of the database (a restored backup?)
    execute_sql(db_url, "UPDATE catalog_state SET version = version + 1")  # a version with no feed entry
    assert store.load_delta(version, 1000) is None
    assert store.load_delta(store.current_version(), 1000) is not None  # nothing since: an empty delta


class CountingStore:
    """The store, counting full loads."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.full_loads = 0

    def load_state(self) -> CatalogState:
        self.full_loads += 1
        return self.store.load_state()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_the_live_catalog_catches_up_without_reloading(store: SqlStore) -> None:
    counting = CountingStore(store)
    live: LiveCatalog[RenderedCatalog] = LiveCatalog(counting, RenderedCatalog)  # type: ignore[arg-type]
    catalog = Catalog(store)
    for change in (lambda: catalog.create("model", {"id": "x/1"}),
                   lambda: catalog.create("alias", {"id": "x-latest", "target": "x/1"}),
                   lambda: catalog.update("group", "chat", {"members": ["x/*"]}),
                   lambda: catalog.create_key("another", policy={"groups": ["chat"]}),
                   lambda: catalog.delete("alias", "x-latest")):
        for policy in POLICIES.values():
            live.current.view(policy)
        change()
        assert live.refresh() is True
        fresh = RenderedCatalog(store.load_state(), live.current.now)
        assert live.version == fresh.version
        assert_same_catalog(live.current, fresh)
    assert counting.full_loads == 1  # the start


def test_the_live_catalog_reloads_when_the_feed_cannot_vouch(store: SqlStore, db_url: str) -> None:
    counting = CountingStore(store)
    live: LiveCatalog[RenderedCatalog] = LiveCatalog(counting, RenderedCatalog)  # type: ignore[arg-type]
    execute_sql(db_url, "UPDATE catalog_state SET version = version + 1")
    Catalog(store).create("model", {"id": "after-a-gap"})
    assert live.refresh() is True and counting.full_loads == 2
    assert "after-a-gap" in live.current.view(ALL_MODELS).bodies and live.version == store.current_version()


# --- a running server against a freshly started one ----------------------------------------------------


def answers(server: Server, keys: dict[str, str], ids: list[str]
            ) -> dict[tuple[str, str], tuple[int, bytes, str]]:
    """Every key's list and retrieves, plain and with metadata: status, body and ETag."""
    seen = {}
    for name, key in keys.items():
        for path in ["/v1/models", *(f"/v1/models/{model_id}" for model_id in ids)]:
            for query in ("", "?expand=metadata"):
                response = server.get(path + query, key)
                etag = response.headers.get("etag", "")
                seen[(name, path + query)] = (response.status_code, response.content, etag)
    return seen


def served_version(server: Server, admin_key: str) -> int:
    return int(server.get("/readyz", admin_key).json()["version"])


def test_a_running_server_answers_like_a_fresh_one(db_url: str, start_server) -> None:
    admin_key = create_key(db_url, "admin", "admin")
    run_cli(db_url, "groups", "set", "chat", "MiniMax-M3*")
    keys = {"admin": admin_key}
    for name, args in {"chat": ["--group", "chat"], "acme": ["--pattern", "acme/*"]}.items():
        keys[name] = run_cli(db_url, "keys", "create", name, *args).stdout.strip()
    running = start_server(db_url)
    answers(running, keys, ["MiniMax-M3"])  # its views exist before the changes

    def admin(method: str, path: str, body: dict[str, Any] | None = None) -> None:
        response = running.http.request(method, running.base_url + path, json=body,
                                        headers={"Authorization": f"Bearer {admin_key}"})
        assert response.status_code in (200, 201), response.text

    # Through the running server's admin API (it catches up before answering) ...
    admin("POST", "/v1/admin/models", {"id": "acme/a", "created": 100, "context_length": 4096})
    far_future = {"created": 2_000_000_000, "shutdown_date": "2099-09-09"}
    admin("POST", "/v1/admin/models", {"id": "acme/b", **far_future})
    admin("POST", "/v1/admin/aliases", {"id": "latest", "target": "acme/a"})
    admin("PATCH", "/v1/admin/models/acme/a", {"created": 5, "owned_by": "acme"})
    admin("PATCH", "/v1/admin/groups/chat", {"members": ["acme/*"]})
    admin("DELETE", "/v1/models/MiniMax-M2")
    # ... and behind its back, with the CLI (it notices by polling or notification)
    run_cli(db_url, "models", "add", "acme/c", "--owned-by", "acme")
    run_cli(db_url, "aliases", "retarget", "latest", "acme/c")
    keys["late"] = run_cli(db_url, "keys", "create", "late", "--pattern", "acme/c").stdout.strip()
    run_cli(db_url, "keys", "update", "acme", "--pattern", "acme/a")
    run_cli(db_url, "models", "remove", "acme/b")

    fresh = start_server(db_url)
    assert wait_until(lambda: served_version(running, admin_key) == served_version(fresh, admin_key), 5) is not None
    ids = ["acme/a", "acme/b", "acme/c", "latest", "MiniMax-M3", "MiniMax-M2", "MiniMax-M2.5", "ghost"]
    assert answers(running, keys, ids) == answers(fresh, keys, ids)
