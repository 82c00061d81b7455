"""The catalog as a file: models, aliases, groups, upstreams and issuers (never keys, never discovered models),
and how a file is applied.

Applying makes the database match the file in one write unit: everything validates first, then all
changes commit together or none do. Models in the file without `created` keep the one they have, so
applying the same file twice changes nothing the second time. Models that upstreams discovered are not
the file's business: pruning leaves them alone, and a file entry with a discovered id makes it the
operator's.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import orjson
import yaml

from modeldex.catalog import writes
from modeldex.catalog.collector import collector_paused
from modeldex.catalog.entities import DISCOVERY_FIELDS, Alias, Entity, Group, Model, list_order, parse
from modeldex.catalog.errors import CatalogError, Conflict, InvalidInput
from modeldex.catalog.issuers import Issuer
from modeldex.catalog.kinds import KINDS, Kind
from modeldex.catalog.upstreams import Upstream

if TYPE_CHECKING:
    from modeldex.catalog.repository import CatalogWriter



@dataclass(frozen=True)
class PlannedChange:
    op: str  # "create", "update" or "delete"
    kind: str
    key: str
    fields: tuple[str, ...] = ()  # for updates: which fields differ

    def line(self) -> str:
        sign = {"create": "+", "update": "~", "delete": "-"}[self.op]
        detail = f" ({', '.join(self.fields)})" if self.fields else ""
        return f"{sign} {self.kind} {self.key}{detail}"

    def document(self) -> dict[str, Any]:
        return {"op": self.op, "entity": self.kind, "id": self.key, "fields": list(self.fields)}


def plan_digest(planned: list[PlannedChange]) -> str:
    """A short digest of a plan: what a preview shows, so that the apply it confirms can insist on the
    same changes (Catalog.apply's `expected_plan`)."""
    text = "\n".join(change.line() for change in planned)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def export_document(models: list[Model], aliases: list[Alias], groups: list[Group],
                    upstreams: Sequence[Upstream] = (), issuers: Sequence[Issuer] = ()) -> dict[str, Any]:
    return {
        "models": [m.document() for m in sorted(models, key=list_order)],
        "aliases": [a.document() for a in sorted(aliases, key=lambda a: a.id)],
        "groups": [g.document() for g in sorted(groups, key=lambda g: g.name)],
        "upstreams": [u.document() for u in sorted(upstreams, key=lambda u: u.name)],
        "issuers": [i.document() for i in sorted(issuers, key=lambda i: i.name)],
    }


# libyaml's parser and emitter when PyYAML has them: a 2.6 MB file of 50,000 models took 20 s to parse
# with the pure-Python loader (measured), several times longer than with libyaml.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MERGE = "tag:yaml.org,2002:merge"


class _Loader(_SAFE_LOADER):  # type: ignore[misc,valid-type]
    """The safe loader, stricter where a catalog file could mean something other than it says: a key
    given twice in one mapping is an error (PyYAML keeps the last, so a second `models:` would silently
    replace the first, and `--prune` delete what it listed), and a bare date stays the text it reads as
    (`shutdown_date: 2027-06-30`, as one writes it; YAML would make it a date object)."""

    yaml_implicit_resolvers: ClassVar[dict[Any, list[tuple[str, Any]]]] = {
        first: [(tag, pattern) for tag, pattern in resolvers if tag != _TIMESTAMP]
        for first, resolvers in _SAFE_LOADER.yaml_implicit_resolvers.items()}

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _value in node.value:  # before merge keys (`<<`) are flattened in: those may be overridden
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE:
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key_node.value!r} appears twice in one mapping", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)  # type: ignore[no-any-return]


_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
# A file's data, with every alias expanded, may be at most this many times larger than the file (plus a
# margin for small files): anchors for shared fields are fine, an exponential "billion laughs" is not.
MAX_EXPANSION = 16
EXPANSION_MARGIN = 100_000
DUMP_CHUNK = 500


def _dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_DUMPER, sort_keys=False, allow_unicode=True, default_flow_style=False)


def dump_yaml(document: dict[str, Any]) -> str:
    """The document as YAML, each section's list dumped `DUMP_CHUNK` entries at a time: the same text as
    one dump (a top-level mapping's list items are not indented), but one dump of 100,000 models took
    11.9 s and held the GIL for up to 1.4 s at a stretch, stalling the server's event loop; in chunks it
    takes about a second, in steps of about 20 ms (measured)."""
    parts = []
    with collector_paused():
        for section, value in document.items():
            if isinstance(value, list) and value:
                parts.append(_dump({section: None}).replace(" null\n", "\n"))
                parts.extend(_dump(value[start:start + DUMP_CHUNK]) for start in range(0, len(value), DUMP_CHUNK))
            else:
                parts.append(_dump({section: value}))
    return "".join(parts)


def load_yaml(text: str) -> Any:
    """The document in `text` (YAML, so JSON too), refused when its aliases expand it out of proportion."""
    try:
        with collector_paused():
            document = yaml.load(text, Loader=_Loader)  # a safe loader: CSafeLoader or SafeLoader
    except yaml.YAMLError as exc:
        if "maximum nesting depth" in str(exc):  # libyaml's limit (1,000)
            raise InvalidInput("file", "file: nested too deeply to be a catalog file") from None
        raise InvalidInput("file", f"file: not valid YAML{_yaml_problem(exc)}") from None
    except RecursionError:  # PyYAML builds nested collections recursively: `[[[[...` 1,000 deep
        raise InvalidInput("file", "file: nested too deeply to be a catalog file") from None
    check_expansion(document, MAX_EXPANSION * len(text) + EXPANSION_MARGIN)
    check_json_values(document)
    return document


# What YAML's safe loader makes beyond JSON's values, as a file would have written it.
_NOT_JSON = {bytes: "binary data (!!binary)", set: "a set (!!set)", dt.date: "a timestamp (!!timestamp)",
             dt.datetime: "a timestamp (!!timestamp)"}
_MAX_INT = 2**63  # what a JSON body to the admin API can carry (and more than any field accepts)
_CONTAINERS = frozenset({dict, list, tuple})  # tuple: what `!!omap` and `!!pairs` hold
_PLAIN = frozenset({str, bool, type(None)})


def check_json_values(document: Any) -> None:
    """Refuse values JSON cannot hold (the file is the admin API's JSON shapes, in YAML): binary data, sets,
    timestamps, keys that are not strings, numbers out of range. Otherwise the same file would mean one
    thing applied here (`!!binary` taken as text) and fail as a request body (`--url`). Each container is
    visited once, however often aliases repeat it; a path is spelled out only for an error."""
    if type(document) not in _CONTAINERS:
        _check_scalar(document, None)
        return
    seen: set[int] = set()
    stack: list[tuple[Any, Any]] = [(document, None)]  # (container, where: None or (parent's where, key))
    while stack:
        node, where = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        is_dict = isinstance(node, dict)
        for key, value in node.items() if is_dict else enumerate(node):
            if is_dict and type(key) is not str:
                place = _json_path(where)
                raise InvalidInput(place, f"{place}: a key must be text, not {key!r} (quote it)")
            kind = type(value)
            if kind in _CONTAINERS:
                stack.append((value, (where, key)))
            elif kind not in _PLAIN:
                _check_scalar(value, (where, key))


def _check_scalar(value: Any, where: Any) -> None:
    problem = None
    kind = _NOT_JSON.get(type(value))
    if kind is not None:
        problem = f"must be a string, number, true/false, null, list or mapping, not {kind}"
    elif isinstance(value, float) and not math.isfinite(value):
        problem = f"must be a finite number, not {value}"
    elif isinstance(value, int) and abs(value) >= _MAX_INT:
        problem = f"the number {value} is out of range"
    if problem is not None:
        place = _json_path(where)
        raise InvalidInput(place, f"{place}: {problem}")


def _json_path(where: Any) -> str:
    """`models[0].name` from (((None, "models"), 0), "name"); "file" for the document itself."""
    keys = []
    while where is not None:
        where, key = where
        keys.append(key)
    path = ""
    for key in reversed(keys):
        path += f"[{key}]" if isinstance(key, int) else f".{key}" if path else key
    return path or "file"


def check_expansion(document: Any, limit: int) -> None:
    """Refuse `document` if, with shared (aliased) parts counted each time they appear, it has more than
    `limit` nodes, or contains itself. Linear in the distinct containers, without recursion."""
    sizes: dict[int, int] = {}  # container id -> expanded size; -1 while its children are being counted
    stack: list[tuple[Any, bool]] = [(document, False)]
    while stack:
        node, children_done = stack.pop()
        children = list(node.values()) if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if not children_done:
            if id(node) in sizes:
                continue
            sizes[id(node)] = -1
            stack.append((node, True))
            stack.extend((child, False) for child in children if isinstance(child, dict | list))
            continue
        total = 1 + len(children)
        for child in children:
            if isinstance(child, dict | list):
                size = sizes[id(child)]
                if size < 0:
                    raise InvalidInput("file", "file: an alias refers to a mapping or list that contains it")
                total += size - 1
        if total > limit:
            raise InvalidInput("file", f"file: its aliases expand it to over {limit} values; write the "
                               "entries out instead")
        sizes[id(node)] = total


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's error in one line, placed by line and column (its own text spans lines and names the
    text "<unicode string>")."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return f"{where}: {exc.problem or exc.context or 'malformed'}"
    if isinstance(exc, yaml.reader.ReaderError):
        code = ord(exc.character) if isinstance(exc.character, str) else exc.character
        return f" at character {exc.position + 1}: character #x{code:04x} is not allowed"
    return ": " + " ".join(str(exc).split())


def _entries(document: Any) -> dict[str, list[dict[str, Any]]]:
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise InvalidInput("file", "file: a catalog file is a mapping with the sections models, aliases, "
                           "groups, upstreams, issuers")
    unknown = sorted(set(document) - {kind.collection for kind in KINDS}, key=str)
    if unknown:
        raise InvalidInput(unknown[0], f"{unknown[0]}: unknown section (expected models, aliases, groups, "
                           "upstreams, issuers)")
    sections: dict[str, list[dict[str, Any]]] = {}
    for section in (kind.collection for kind in KINDS):
        entries = document.get(section)
        if entries is None:  # `aliases:` with nothing under it; `{}` or `""` is a mistake, not an empty list
            entries = []
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise InvalidInput(section, f"{section}: must be a list of mappings")
        sections[section] = entries
    return sections


def apply_document(writer: CatalogWriter, document: Any, prune: bool) -> list[PlannedChange]:
    """Make the catalog match `document` through `writer`; raises (and so rolls back) on the first problem,
    naming the entry."""
    sections = _entries(document)
    desired: dict[str, dict[str, Entity]] = {}
    for kind in KINDS:
        section, key_field = kind.collection, kind.key_field
        current = _by_key(writer, kind)
        wanted: dict[str, Entity] = {}
        for index, entry in enumerate(sections[section]):
            where = f"{section}[{index}]"
            key = entry.get(key_field)
            if key is not None and not isinstance(key, str):  # e.g. YAML's !!binary, or a number
                raise InvalidInput(f"{where}.{key_field}", f"{where}: {key_field} must be a string")
            label = f"{where} ({key_field} {key!r})" if isinstance(key, str) else where
            existing = current.get(key) if isinstance(key, str) else None
            if isinstance(existing, Model) and "created" not in entry:
                entry = {**entry, "created": existing.created}
            try:
                if kind.type is Model and (field := next((f for f in DISCOVERY_FIELDS if f in entry), None)):
                    raise InvalidInput(field, f"{field}: set by discovery only; a file defines its own models")
                entity = parse(kind.type, entry)
            except InvalidInput as exc:
                raise InvalidInput(f"{where}.{exc.field}", f"{label}: {exc.message}") from None
            if key in wanted:
                raise InvalidInput(where, f"{label}: appears twice in the file")
            wanted[str(key)] = entity
        desired[kind.name] = wanted

    planned: list[PlannedChange] = []
    for kind in KINDS:
        current = _by_key(writer, kind)
        for key, entity in desired[kind.name].items():
            label = f"{kind.collection} ({kind.key_field} {key!r})"
            try:
                if key not in current:
                    writes.create(writer, entity)
                    planned.append(PlannedChange("create", kind.name, key))
                elif current[key] != entity:
                    before, after = current[key].document(), entity.document()
                    fields = tuple(sorted(f for f in before.keys() | after.keys() if before.get(f) != after.get(f)))
                    _revision, removed = writes.replace(writer, entity)
                    planned.append(PlannedChange("update", kind.name, key, fields))
                    planned += [PlannedChange("delete", "model", model_id) for model_id in removed]
                else:
                    writes.check(writer, entity)
            except CatalogError as exc:
                raise _labelled(exc, label) from None
    if prune:
        for kind in reversed(KINDS):
            stored = _by_key(writer, kind)
            for key in sorted(set(stored) - set(desired[kind.name])):
                entity = stored[key]
                if isinstance(entity, Model) and entity.source is not None:
                    continue  # discovered: its upstream decides
                try:
                    removed = writes.remove(writer, kind.type, key)
                except CatalogError as exc:
                    raise _labelled(exc, f"pruning {kind.name} {key!r}") from None
                planned += [PlannedChange("delete", "model", model_id) for model_id in removed]
                planned.append(PlannedChange("delete", kind.name, key))
    return planned


def _by_key(writer: CatalogWriter, kind: Kind[Entity]) -> dict[str, Entity]:
    return {kind.key_of(entity): entity for entity in writer.all(kind.type)}


def _labelled(exc: CatalogError, label: str) -> CatalogError:
    """The same problem, saying which entry of the file it is about."""
    if isinstance(exc, InvalidInput):
        return InvalidInput(exc.field, f"{label}: {exc.message}")
    return Conflict(f"{label}: {exc}")


def parse_catalog_file(body: bytes) -> object:
    """A catalog file's document: JSON parsed as such (orjson, milliseconds), anything else as YAML (a
    superset of JSON, so the document is the same; but YAML refuses the surrogate-pair escapes JSON encoders
    write for characters beyond U+FFFF, such as emoji). Text that is not UTF-8 is refused, not patched
    with U+FFFD."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput("file", f"file: not UTF-8 text (byte {exc.start + 1} is 0x{body[exc.start]:02x}); "
                           "a catalog file is YAML or JSON in UTF-8") from None
    return load_yaml(text)
