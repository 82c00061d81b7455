"""The SQL store: versions move with committed writes only; failed writes change nothing."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from modeldex.catalog.errors import KeyNameTaken, KeyNotFound, ModelAlreadyExists, ModelNotFound
from modeldex.catalog.keys import Scope, new_key
from modeldex.catalog.models import new_model
from modeldex.catalog.seed import seed_models
from modeldex.store import SqlStore, StoreError, open_store


@pytest.fixture
def store(tmp_path: Path):
    store = open_store(f"sqlite:///{tmp_path}/c.db", seed=seed_models())
    yield store
    store.close()


def test_seeding_happens_once(store: SqlStore) -> None:
    state = store.load_state()
    assert len(state.models) == 9 and state.version == 1
    assert store.seed_once(seed_models()) is False
    assert store.current_version() == 1


def test_each_committed_write_bumps_the_version(store: SqlStore) -> None:
    start = store.current_version()
    store.add_model(new_model("a"))
    record, _secret = new_key("k", Scope.READ)
    store.insert_key(record)
    store.revoke_key("k")
    store.remove_model("a")
    assert store.current_version() == start + 4


def test_failed_writes_change_nothing(store: SqlStore) -> None:
    store.insert_key(new_key("taken", Scope.READ)[0])
    before = store.load_state()
    with pytest.raises(ModelAlreadyExists):
        store.add_model(new_model("MiniMax-M2"))
    with pytest.raises(ModelNotFound):
        store.remove_model("ghost")
    with pytest.raises(KeyNameTaken):
        store.insert_key(new_key("taken", Scope.ADMIN)[0])
    with pytest.raises(KeyNotFound):
        store.revoke_key("ghost")
    assert store.load_state() == before


def test_state_holds_active_keys_only(store: SqlStore) -> None:
    store.insert_key(new_key("live", Scope.READ)[0])
    store.insert_key(new_key("dead", Scope.ADMIN)[0])
    store.revoke_key("dead")
    assert [k.name for k in store.load_state().keys] == ["live"]
    assert [k.name for k in store.list_keys(include_revoked=True)] == ["live", "dead"]


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/c.db"
    stores = [open_store(url, seed=[]) for _ in range(4)]
    errors: list[Exception] = []

    def writer(index: int) -> None:
        try:
            for n in range(25):
                stores[index].add_model(new_model(f"w{index}/m{n}"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    state = stores[0].load_state()
    assert len(state.models) == 100
    assert state.version == 1 + 100  # the (empty) seeding, then one per write
    for store in stores:
        store.close()


def test_in_memory_sqlite_is_refused() -> None:
    with pytest.raises(StoreError, match="in-memory"):
        open_store("sqlite://")
