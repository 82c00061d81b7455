"""Storage stays bounded: the change feed and revoked keys are compacted by age or by versions (by the
store, `modeldex db compact`, and every server worker by --change-retention), and a server that needs a
version that was compacted away loads the whole catalog instead."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import text

from modeldex.api.render import RenderedCatalog
from modeldex.catalog.entities import Model
from modeldex.catalog.live import LiveCatalog
from modeldex.catalog.retention import Retention, parse_retention
from modeldex.catalog.seed import seed_models
from modeldex.catalog.service import Catalog
from modeldex.store import SqlStore, open_store

from .conftest import create_key, run_cli, wait_until


@pytest.fixture
def store(tmp_path: Path) -> SqlStore:
    store = open_store(f"sqlite:///{tmp_path}/catalog.db", seed=seed_models())
    yield store
    store.close()


@pytest.mark.parametrize(("text", "expected"), [
    ("30d", Retention(max_age_s=30 * 86400)), ("12h", Retention(max_age_s=43200)), ("90m", Retention(max_age_s=5400)),
    ("100000", Retention(versions=100000)), ("off", None), ("forever", None),
])
def test_retentions_as_operators_write_them(text: str, expected: Retention | None) -> None:
    assert parse_retention(text) == expected
    if expected is not None:
        assert parse_retention(str(expected)) == expected


@pytest.mark.parametrize("text", ["0", "5x", "30 days", "10s", "-1d", "1000000000d"])
def test_a_retention_that_makes_no_sense_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=repr(text)):
        parse_retention(text)


def test_compacting_by_versions_keeps_the_last_ones_and_the_keys_they_revoked(store: SqlStore) -> None:
    catalog = Catalog(store)
    catalog.create_key("early", "read")
    catalog.revoke_key("early")
    for n in range(6):
        catalog.create("model", {"id": f"kept/{n}"})
    version = store.current_version()
    assert min(change.version for change in store.changes(0, 1000)) == 1
    compacted = catalog.compact(Retention(versions=3), time.time())
    assert {change.version for change in store.changes(0, 1000)} == {version - 2, version - 1, version}
    assert compacted.changes > 0 and compacted.revoked_keys == 1
    assert [key.name for key in store.list_keys(include_revoked=True)] == []
    assert store.current_version() == version  # compaction is not a catalog change
    assert {f"kept/{n}" for n in range(6)} <= {model.id for model in store.all(Model)}  # the catalog is as it was
    again = catalog.compact(Retention(versions=3), time.time())
    assert (again.changes, again.revoked_keys) == (0, 0)


def test_compacting_by_age_keeps_what_is_younger(store: SqlStore) -> None:
    catalog = Catalog(store)
    catalog.create("model", {"id": "old"})
    catalog.create_key("gone", "read")
    catalog.revoke_key("gone")
    assert catalog.compact(Retention(max_age_s=3600), time.time()).changes == 0  # all younger than an hour
    compacted = catalog.compact(Retention(max_age_s=3600), time.time() + 7200)  # two hours later
    assert compacted.revoked_keys == 1 and store.changes(0, 1000) == []


def test_compacting_by_age_removes_whole_versions_from_the_oldest(store: SqlStore) -> None:
    """Each entry carries the time it was written: a large unit's span seconds, and replicas' clocks differ.
    Compaction by age removed entries by that time alone: part of a version, or a version below ones it
    kept, which a reader following the feed (or a server catching up from it) took for the whole."""
    with store.write("t") as w:
        w.create(Model(id="unit/a"))
        w.create(Model(id="unit/b"))
    with store.write("replica-behind") as w:
        w.create(Model(id="skewed"))
    with store.write("t") as w:
        w.create(Model(id="recent"))
    start = store.current_version() - 3
    # The unit's entries written at 1000 and 1003, then one from a replica whose clock is 2 s behind, then 1010.
    times = {"unit/a": 1000.0, "unit/b": 1003.0, "skewed": 1001.0, "recent": 1010.0}
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE changes SET at = 900 WHERE version <= :start"), {"start": start})  # the seed
        for entity_id, at in times.items():
            conn.execute(text("UPDATE changes SET at = :at WHERE entity_id = :id"), {"at": at, "id": entity_id})

    def kept() -> list[tuple[int, str]]:
        return [(c.version, c.id) for c in store.changes(start, 1000)]

    Catalog(store).compact(Retention(max_age_s=1), 1003.5)  # removes what is older than 1002.5
    assert kept() == [(start + 1, "unit/a"), (start + 1, "unit/b"), (start + 2, "skewed"), (start + 3, "recent")]
    Catalog(store).compact(Retention(max_age_s=1), 1005.0)  # every entry of the first two versions is older
    assert kept() == [(start + 3, "recent")]
    assert store.changes(0, 1000) == store.changes(start + 2, 1000)  # nothing older than them either


def test_a_server_behind_a_compacted_feed_loads_the_whole_catalog(store: SqlStore) -> None:
    catalog = Catalog(store)
    live = LiveCatalog(store, RenderedCatalog, interval=60)
    live.refresh()
    served = live.version
    for n in range(4):
        catalog.create("model", {"id": f"while-away/{n}"})
    assert store.load_delta(served, 1000) is not None  # the feed still covers the gap
    catalog.compact(Retention(versions=1), time.time())
    assert store.load_delta(served, 1000) is None  # it no longer does
    live.refresh()
    assert live.version == store.current_version()
    assert {f"while-away/{n}" for n in range(4)} <= set(live.current.models)


def test_serve_compacts_by_its_retention_and_the_cli_on_demand(sqlite_url: str, start_server) -> None:
    for n in range(5):
        run_cli(sqlite_url, "models", "add", f"feed/{n}")
    admin = create_key(sqlite_url, "ops", "admin")
    server = start_server(sqlite_url, "--change-retention", "2")

    def feed_versions() -> set[int]:
        return {change["version"] for change in server.get("/v1/admin/changes", admin).json()["data"]}

    version = server.get("/v1/admin/changes", admin).json()["version"]
    assert wait_until(lambda: feed_versions() == {version - 1, version}, 15) is not None, feed_versions()
    # The worker logs what it removed once the removal is committed (ops/compaction.py): a step after the one
    # the feed shows, so wait for the line.
    assert wait_until(lambda: "removed" in server.log() and "change-feed entries" in server.log(), 10) is not None
    result = run_cli(sqlite_url, "db", "compact", "--keep", "1")
    assert result.stdout.startswith("removed ") and "(kept: 1)" in result.stdout
    assert feed_versions() == {version}
    refused = run_cli(sqlite_url, "serve", "--change-retention", "5x", check=False)
    assert refused.returncode == 2 and "5x" in refused.stderr and "Traceback" not in refused.stderr
