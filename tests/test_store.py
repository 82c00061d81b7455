"""The SQL store: versions move with committed writes only; failed writes change nothing."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from sqlalchemy import text

from modeldex.catalog.entities import Alias, Group, Model, new_model
from modeldex.catalog.errors import AlreadyExists, InvalidInput, NotFound, PreconditionFailed
from modeldex.catalog.keys import Scope, new_key
from modeldex.catalog.seed import seed_models
from modeldex.catalog.service import Catalog
from modeldex.store import SqlStore, StoreError, open_store


@pytest.fixture
def store(db_url: str):
    store = open_store(db_url, seed=seed_models())
    yield store
    store.close()


def test_seeding_happens_once_and_is_in_the_feed(store: SqlStore) -> None:
    state = store.load_state()
    assert len(state.models) == 9 and state.version == 1
    assert store.seed_once(seed_models()) is False
    assert store.current_version() == 1
    feed = store.changes(0, 100)
    assert len(feed) == 9 and {c.op for c in feed} == {"create"} and {c.actor for c in feed} == {"seed"}


def test_each_committed_unit_bumps_the_version_once(store: SqlStore) -> None:
    start = store.current_version()
    with store.write("t") as w:
        w.create(new_model("a"))
        w.create(new_model("b"))
    with store.write("t") as w:
        w.insert_key(new_key("k", Scope.READ)[0])
    with store.write("t") as w:
        w.revoke_key("k")
    assert store.current_version() == start + 3
    feed = store.changes(start, 100)
    assert [(c.version, c.entity, c.id, c.op) for c in feed] == [
        (start + 1, "model", "a", "create"), (start + 1, "model", "b", "create"),
        (start + 2, "key", "k", "create"), (start + 3, "key", "k", "delete")]
    assert all("secret" not in str(c.after) and "hash" not in str(c.before) for c in feed)


def test_a_unit_that_changes_nothing_or_fails_leaves_no_trace(store: SqlStore) -> None:
    before = (store.load_state(), store.current_version(), store.changes(0, 1000))
    with store.write("t"):
        pass
    with pytest.raises(AlreadyExists), store.write("t") as w:
        w.create(new_model("fresh"))
        w.create(new_model("MiniMax-M2"))
    with pytest.raises(NotFound), store.write("t") as w:
        w.delete(Model, "ghost")
    with store.write("t", dry_run=True) as w:
        w.create(new_model("dry"))
    assert (store.load_state(), store.current_version(), store.changes(0, 1000)) == before


def test_revisions_guard_updates(store: SqlStore) -> None:
    with store.write("t") as w:
        w.create(Group(name="chat", members=("MiniMax-*",)))
    with store.write("t") as w:
        assert w.update(Group(name="chat", members=("MiniMax-M3",)), if_match=1) == 2
    with pytest.raises(PreconditionFailed), store.write("t") as w:
        w.update(Group(name="chat", members=("x",)), if_match=1)
    found = store.get_revision(Group, "chat")
    assert found is not None and found[1] == 2 and found[0].members == ("MiniMax-M3",)  # type: ignore[attr-defined]


def test_a_unit_that_read_a_kind_whole_sees_its_own_writes_as_the_database_does(store: SqlStore) -> None:
    """A write unit answers lookups of a kind it has read whole from that read, kept current by its own
    creates, updates and deletes: what it sees must be what the database holds."""
    with store.write("t") as w:
        assert len(w.all(Model)) == 9 and w.get(Model, "fresh") is None
        w.create(new_model("fresh"))
        assert w.get_revision(Model, "fresh") == (new_model("fresh"), 1)
        with pytest.raises(AlreadyExists):
            w.create(new_model("fresh"))
        changed = new_model("fresh").model_copy(update={"owned_by": "someone"})
        assert w.update(changed, if_match=1) == 2
        w.delete(Model, "MiniMax-M2")
        assert w.get(Model, "MiniMax-M2") is None
        with pytest.raises(NotFound):
            w.delete(Model, "MiniMax-M2")
        seen = sorted((m.id, r) for m, r in w.all_revisions(Model))
    with store.write("t") as w:  # a new unit reads the database itself
        assert sorted((m.id, r) for m, r in w.all_revisions(Model)) == seen
        assert w.get_revision(Model, "fresh") == (changed, 2)
    assert ("fresh", 2) in seen and "MiniMax-M2" not in {model_id for model_id, _ in seen}


def test_state_holds_active_keys_aliases_and_groups(store: SqlStore) -> None:
    with store.write("t") as w:
        w.insert_key(new_key("live", Scope.READ)[0])
        w.insert_key(new_key("dead", Scope.ADMIN)[0])
        w.create(Alias(id="MiniMax-latest", target="MiniMax-M3"))
        w.create(Group(name="g", members=("a*",)))
    with store.write("t") as w:
        w.revoke_key("dead")
    state = store.load_state()
    assert [k.name for k in state.keys] == ["live"]
    assert [a.id for a in state.aliases] == ["MiniMax-latest"] and [g.name for g in state.groups] == ["g"]
    assert [k.name for k in store.list_keys(include_revoked=True)] == ["live", "dead"]


def test_metadata_round_trips(store: SqlStore) -> None:
    model = new_model("m", context_length=8192, pricing={"prompt": "0.000001", "completion": "0.000002"},
                      input_modalities=["text", "image"], shutdown_date="2030-01-01")
    with store.write("t") as w:
        w.create(model)
    assert next(m for m in store.load_state().models if m.id == "m") == model


def test_models_read_back_without_metadata_equal_validated_ones(store: SqlStore) -> None:
    """The store builds them the fast way (`Model.stored`), skipping validation: nothing may differ."""
    plain = new_model("plain", owned_by="acme", created=5)
    with store.write("t") as w:
        w.create(plain)
    read = next(m for m in store.load_state().models if m.id == "plain")
    assert read == plain and hash(read) == hash(plain) and read.document() == plain.document()
    stored = Model.stored("m", 5, "acme", "up", 1.5)
    validated = Model.model_validate({"id": "m", "created": 5, "owned_by": "acme", "source": "up",
                                      "stale_since": 1.5})
    assert stored == validated and hash(stored) == hash(validated)
    assert stored.document() == validated.document() and stored.metadata() == {}


def writing(stores: list[SqlStore], units: Callable[[int], list[list[str]]]) -> tuple[list[threading.Thread],
                                                                                    list[Exception]]:
    """A started thread for each store, committing `units(index)`: write units of new models, by id."""
    errors: list[Exception] = []

    def writer(index: int) -> None:
        try:
            for unit in units(index):
                with stores[index].write(f"w{index}") as w:
                    for model_id in unit:
                        w.create(new_model(model_id))
        except Exception as exc:  # pragma: no cover - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    return threads, errors


def test_concurrent_writers_lose_nothing(db_url: str) -> None:
    stores = [open_store(db_url, seed=[]) for _ in range(4)]
    threads, errors = writing(stores, lambda index: [[f"w{index}/m{n}"] for n in range(25)])
    for thread in threads:
        thread.join()
    assert errors == []
    state = stores[0].load_state()
    assert len(state.models) == 100
    assert len(stores[0].changes(0, 1000)) == 100
    for store in stores:
        store.close()


def test_a_reader_paging_the_feed_while_writers_commit_sees_every_change_once(db_url: str) -> None:
    """Writers in their own connections commit units of one to four entities while a reader follows the feed
    with pages smaller than some units (Catalog.change_page, as GET /v1/admin/changes serves it): what the
    reader collected is the feed, in order, without a gap or a repeat."""
    stores = [open_store(db_url, seed=[]) for _ in range(4)]
    threads, errors = writing(stores[:3], lambda index: [[f"w{index}/u{n}/m{m}" for m in range(1 + (n + index) % 4)]
                                                         for n in range(15)])
    reader = Catalog(stores[3])
    since, seen = 0, []
    while True:
        finished = not any(thread.is_alive() for thread in threads)
        page = reader.change_page(since, 3)
        seen += page.entries
        if page.has_more:
            since = page.entries[-1].version
        elif finished:
            break
        else:
            since = page.version
    for thread in threads:
        thread.join()
    assert errors == []
    feed = [(c.version, c.id) for c in stores[0].changes(0, 10_000)]
    assert len(feed) == sum(1 + (n + index) % 4 for n in range(15) for index in range(3))
    assert [(c.version, c.id) for c in seen] == feed
    for store in stores:
        store.close()


def test_what_an_earlier_modeldex_stored_still_loads_after_input_rules_tightened(db_url: str) -> None:
    """Ids must now be in NFC and free text free of NUL, rules added after catalogs could hold such entities
    (the NUL only in SQLite). One of them, with metadata, made loading the catalog raise: no server started,
    no command ran, until someone removed the row by hand."""
    decomposed = "cafe\u0301/m"  # é as e and a combining accent
    store = open_store(db_url, seed=[])
    since = store.current_version()
    with store.engine.begin() as conn:
        conn.execute(text("INSERT INTO models (id, created, owned_by, meta, revision) VALUES (:id, 5, 'old', :meta, 1)"),
                     {"id": decomposed, "meta": '{"name": "Café", "replaced_by": "cafe\\u0301/m"}'})
        conn.execute(text("INSERT INTO changes (version, at, actor, entity, entity_id, op) "
                          "VALUES (:v, 0, 'old', 'model', :id, 'create')"), {"v": since + 1, "id": decomposed})
        if db_url.startswith("sqlite"):
            conn.execute(text("INSERT INTO groups (name, members, description, revision) "
                              "VALUES ('old', '[\"cafe*\"]', :description, 1)"), {"description": "a\x00b"})
        conn.execute(text("UPDATE catalog_state SET version = version + 1"))
    try:
        state = store.load_state()
        assert [m.id for m in state.models] == [decomposed] and state.models[0].name == "Café"
        assert store.get(Model, decomposed) == state.models[0]
        delta = store.load_delta(since, 100)
        assert delta is not None and delta.models == {decomposed: state.models[0]}
        if db_url.startswith("sqlite"):
            assert [g.description for g in state.groups] == ["a\x00b"]
        with store.write("t") as w:  # and it can be removed as any other
            w.delete(Model, decomposed)
        assert store.load_state().models == ()
    finally:
        store.close()
    with pytest.raises(InvalidInput, match="NFC"):  # as input, the rule holds
        new_model(decomposed)


def test_in_memory_sqlite_is_refused() -> None:
    with pytest.raises(StoreError, match="in-memory"):
        open_store("sqlite://")


def test_the_schema_revision_the_code_expects_is_the_newest_migration() -> None:
    """`migrate.SCHEMA_REVISION` lets a database at the current schema open without importing Alembic; it
    must name the newest migration script, or every database would look outdated (or current too soon)."""
    from modeldex.store import migrate

    assert migrate.head_revision() == migrate.SCHEMA_REVISION
