"""Catalog files applied to a store, without a server or the CLI: atomic, idempotent, dry runs change
nothing, pruning spares discovered models. test_catalog_file.py keeps the CLI's contract."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modeldex.catalog.entities import Model, new_model
from modeldex.catalog.errors import CatalogError, Conflict, InvalidInput
from modeldex.catalog.seed import seed_models
from modeldex.catalog.service import Catalog
from modeldex.store import SqlStore, open_store

from .conftest import SEED_IDS

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
UPSTREAM = {"name": "vllm", "base_url": "http://10.0.0.5:8000/v1"}
DISCOVERED = "vllm-model-1"
DOCUMENT: dict[str, Any] = {
    "models": [
        {"id": "MiniMax-M3", "owned_by": "minimax", "context_length": 204800},  # no created: keeps its own
        {"id": LLAMA, "owned_by": "meta", "created": 1721692800, "input_modalities": ["text"]},
    ],
    "aliases": [{"id": "MiniMax-latest", "target": "MiniMax-M3"}],
    "groups": [{"name": "chat", "members": ["MiniMax-*", "meta-llama/*"]}],
    "upstreams": [UPSTREAM],
}


def document(**changes: Any) -> dict[str, Any]:
    """A deep copy of DOCUMENT with sections replaced or (as None) removed."""
    result = copy.deepcopy(DOCUMENT)
    for section, entries in changes.items():
        if entries is None:
            result.pop(section, None)
        else:
            result[section] = entries
    return result


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    """The seed, an upstream, and one model the upstream discovered (written as discovery writes it)."""
    store = open_store(f"sqlite:///{tmp_path}/catalog.db", seed=seed_models())
    Catalog(store).create("upstream", dict(UPSTREAM))
    with store.write("upstream:vllm") as writer:
        writer.create(new_model(DISCOVERED, owned_by="vllm", created=1700000000, source="vllm"))
    yield store
    store.close()


def planned(changes: list) -> set[tuple[str, str, str]]:
    return {(c.op, c.kind, c.key) for c in changes}


def test_apply_reports_its_changes_then_is_idempotent(store: SqlStore) -> None:
    catalog = Catalog(store)
    created_before = store.get(Model, "MiniMax-M3").created
    version, changes = catalog.apply(document())
    assert planned(changes) == {("create", "group", "chat"), ("update", "model", "MiniMax-M3"),
                                ("create", "model", LLAMA), ("create", "alias", "MiniMax-latest")}
    assert next(c for c in changes if c.key == "MiniMax-M3").fields == ("context_length",)
    assert version == store.current_version()
    state = store.load_state()
    assert next(m for m in state.models if m.id == "MiniMax-M3").created == created_before

    again_version, again = catalog.apply(document())
    assert (again_version, again) == (version, [])
    assert store.current_version() == version
    assert store.load_state() == state
    assert store.changes(version, 100) == []


def test_a_dry_run_changes_nothing_and_plans_what_the_real_run_does(store: SqlStore) -> None:
    catalog = Catalog(store)
    before = store.load_state()
    version, dry = catalog.apply(document(), prune=True, dry_run=True)
    assert version == before.version == store.current_version()
    assert store.load_state() == before
    assert store.changes(before.version, 100) == []
    assert ("delete", "model", "MiniMax-M2") in planned(dry)
    real_version, real = catalog.apply(document(), prune=True)
    assert real == dry
    assert real_version == before.version + 1


def test_prune_removes_what_the_file_omits_but_never_discovered_models(store: SqlStore) -> None:
    catalog = Catalog(store)
    catalog.create("alias", {"id": "old-alias", "target": "MiniMax-M2"})  # pruned before its target
    catalog.create("group", {"name": "old-group", "members": ["x*"]})
    _version, changes = catalog.apply(document(), prune=True)
    state = store.load_state()
    assert {m.id for m in state.models} == {"MiniMax-M3", LLAMA, DISCOVERED}
    assert next(m for m in state.models if m.id == DISCOVERED).source == "vllm"
    assert [a.id for a in state.aliases] == ["MiniMax-latest"]
    assert [g.name for g in state.groups] == ["chat"]
    assert [u.name for u in state.upstreams] == ["vllm"]
    deleted = {(c.kind, c.key) for c in changes if c.op == "delete"}
    assert deleted == {("model", m) for m in SEED_IDS if m != "MiniMax-M3"} | {
        ("alias", "old-alias"), ("group", "old-group")}
    assert ("model", DISCOVERED) not in deleted


def test_a_file_entry_with_a_discovered_id_makes_it_the_operators(store: SqlStore) -> None:
    catalog = Catalog(store)
    catalog.apply(document(models=[*DOCUMENT["models"], {"id": DISCOVERED, "owned_by": "acme"}]))
    taken = next(m for m in store.load_state().models if m.id == DISCOVERED)
    assert (taken.source, taken.owned_by, taken.created) == (None, "acme", 1700000000)
    # Now the file's business: a pruning file without it removes it.
    catalog.apply(document(), prune=True)
    assert DISCOVERED not in {m.id for m in store.load_state().models}


BAD = {
    # Found while validating, before any write.
    "late invalid model": (document(models=[*DOCUMENT["models"], {"id": "z-late", "context_length": -5}]),
                           InvalidInput, "models[2] (id 'z-late'): context_length"),
    "discovery field": (document(models=[{"id": "x-1", "source": "vllm"}]), InvalidInput,
                        "models[0] (id 'x-1'): source: set by discovery only"),
    "twice": (document(models=[*DOCUMENT["models"], {"id": LLAMA}]), InvalidInput, "appears twice"),
    "unknown section": ({**document(), "extras": []}, InvalidInput, "extras: unknown section"),
    "not a list": (document(groups={"name": "chat"}), InvalidInput, "groups: must be a list"),
    # Found while writing, after other entries were written: only a rollback undoes those.
    "alias to nowhere": (document(aliases=[{"id": "MiniMax-latest", "target": "ghost"}]), InvalidInput,
                         "aliases (id 'MiniMax-latest'): target"),
    "alias over a model": (document(aliases=[{"id": "MiniMax-M2", "target": "MiniMax-M3"}]), Conflict,
                           "would hide the model"),
    "pruning an alias target": (document(models=[DOCUMENT["models"][1]]), Conflict,
                                "pruning model 'MiniMax-M3'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_one_bad_entry_changes_nothing(store: SqlStore, case: str) -> None:
    catalog = Catalog(store)
    catalog.apply(document())
    catalog.create("model", {"id": "operator/model", "owned_by": "acme"})
    before = store.load_state()
    bad, error_type, message = BAD[case]
    with pytest.raises(CatalogError) as caught:
        catalog.apply(bad, prune=True)
    assert type(caught.value) is error_type
    assert message in str(caught.value)
    assert store.load_state() == before
    assert store.current_version() == before.version
    assert store.changes(before.version, 100) == []


def test_yaml_files_are_bounded_and_dumped_as_one_document_would_be() -> None:
    import yaml

    from modeldex.catalog.catalog_file import DUMP_CHUNK, dump_yaml, load_yaml

    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))
    with pytest.raises(InvalidInput) as caught:
        load_yaml(laughs)  # 9**9 values from 600 bytes
    assert caught.value.field == "file" and "aliases expand it" in caught.value.message
    with pytest.raises(InvalidInput) as caught:
        load_yaml("models: &m [{id: a}, *m]\n")
    assert "contains it" in caught.value.message
    with pytest.raises(InvalidInput) as caught:
        load_yaml("models: " + "[" * 20_000 + "]" * 20_000)
    assert caught.value.field == "file"
    shared = load_yaml("x: &x {owned_by: acme}\nmodels: [{id: a, meta: *x}, {id: b, meta: *x}]\n")
    assert shared["models"][1]["meta"] == {"owned_by": "acme"}  # modest sharing is fine

    big = {"models": [{"id": f"m/{i}", "created": i, "description": "é " * (i % 40)} for i in range(DUMP_CHUNK * 3 + 7)],
           "aliases": [], "groups": [{"name": "g", "members": ["m/*"]}], "upstreams": []}
    assert dump_yaml(big) == yaml.safe_dump(big, sort_keys=False, allow_unicode=True, default_flow_style=False)
    assert load_yaml(dump_yaml(big)) == big


def test_an_id_that_is_not_a_string_is_refused_and_changes_nothing(store: SqlStore) -> None:
    from modeldex.catalog.catalog_file import load_yaml

    catalog = Catalog(store)
    version = store.current_version()
    for text in ("models:\n  - id: !!binary aGVsbG8=\n", "models:\n  - id: 42\n"):
        with pytest.raises(InvalidInput) as raised:
            catalog.apply(load_yaml(text))
        assert raised.value.field == "models[0].id" and "must be a string" in raised.value.message
    assert store.current_version() == version
    assert store.get(Model, "hello") is None


def test_a_key_given_twice_is_refused_and_a_bare_date_is_its_text(store: SqlStore) -> None:
    """PyYAML keeps the last of two equal keys: a second `models:` would replace the first, and --prune
    then delete what the first listed. A date written bare, as people write dates, stays the text."""
    from modeldex.catalog.catalog_file import load_yaml

    catalog = Catalog(store)
    version = store.current_version()
    for text, line in (("models:\n  - id: a\nmodels:\n  - id: b\n", 3),
                       ("models:\n  - id: a\n    context_length: 1\n    context_length: 2\n", 4)):
        with pytest.raises(InvalidInput) as raised:
            catalog.apply(load_yaml(text), prune=True)
        assert raised.value.message.startswith(f"file: not valid YAML at line {line}, column ")
        assert "appears twice in one mapping" in raised.value.message
    assert store.current_version() == version
    # A merge key's fields may be overridden: that is what it is for.
    merged = load_yaml("base: &b {owned_by: x, context_length: 5}\nmodels:\n  - {<<: *b, id: a, context_length: 9}\n")
    assert merged["models"] == [{"owned_by": "x", "context_length": 9, "id": "a"}]
    catalog.apply(load_yaml(f"models:\n{''.join(f'  - id: {i}{chr(10)}' for i in SEED_IDS)}"
                            "  - id: dated\n    shutdown_date: 2099-06-30\n"))
    assert store.get(Model, "dated").shutdown_date == "2099-06-30"


@pytest.mark.parametrize(("text", "field", "message"), [
    ("models:\n  - id: a\n    name: !!binary aGVsbG8=\n", "models[0].name", "not binary data (!!binary)"),
    ("models:\n  - id: a\n    shutdown_date: !!timestamp 2027-01-01\n", "models[0].shutdown_date", "timestamp"),
    ("groups:\n  - name: g\n    members: !!set {a, b}\n", "groups[0].members", "not a set (!!set)"),
    ("models:\n  - id: a\n    1: 2\n", "models[0]", "a key must be text, not 1"),
    ("1: x\nmodels: []\n", "file", "a key must be text, not 1"),  # was a TypeError sorting the sections
    ("models:\n  - id: a\n    context_length: .nan\n", "models[0].context_length", "finite number"),
    ("models:\n  - id: a\n    created: 99999999999999999999999\n", "models[0].created", "out of range"),
])
def test_values_json_cannot_hold_are_refused_as_the_file_is_read(text: str, field: str, message: str) -> None:
    """A catalog file is the admin API's JSON in YAML: what JSON cannot hold failed with a traceback when
    sent to a server (`apply --url`), and applied locally, `!!binary` became text."""
    from modeldex.catalog.catalog_file import load_yaml, parse_catalog_file

    for parse_text in (load_yaml, lambda t: parse_catalog_file(t.encode())):
        with pytest.raises(InvalidInput) as raised:
            parse_text(text)
        assert raised.value.field == field and message in raised.value.message, raised.value.message
    # Aliased parts are checked once, however often they repeat.
    assert load_yaml("x: &x {owned_by: acme}\nmodels: [{id: a, meta: *x}, {id: b, meta: *x}]\n")


def test_json_is_read_as_json_and_text_that_is_not_utf8_is_refused() -> None:
    """JSON encoders write characters beyond U+FFFF as surrogate-pair escapes, which YAML refuses; of two
    equal keys the last counts, as docs/cli.md says. Bytes that are not UTF-8 were read as U+FFFD."""
    from modeldex.catalog.catalog_file import parse_catalog_file

    body = b'{"models": [{"id": "e", "description": "\\ud83d\\ude00", "owned_by": "a", "owned_by": "b"}]}'
    assert parse_catalog_file(body) == {"models": [{"id": "e", "description": "\U0001f600", "owned_by": "b"}]}
    with pytest.raises(InvalidInput) as raised:
        parse_catalog_file(b"models:\n  - id: a\n    description: caf\xe9\n")
    assert raised.value.message.startswith("file: not UTF-8 text (byte 39 is 0xe9)")
