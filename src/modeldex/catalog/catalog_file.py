"""The catalog as a file: models, aliases, groups, upstreams and issuers (never keys, never discovered models),
and how a file is applied.

Applying makes the database match the file in one write unit: everything validates first, then all
changes commit together or none do. Models in the file without `created` keep the one they have, so
applying the same file twice changes nothing the second time. Models that upstreams discovered are not
the file's business: pruning leaves them alone, and a file entry with a discovered id makes it the
operator's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from modeldex.catalog import writes
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


def export_document(models: list[Model], aliases: list[Alias], groups: list[Group],
                    upstreams: Sequence[Upstream] = (), issuers: Sequence[Issuer] = ()) -> dict[str, Any]:
    return {
        "models": [m.document() for m in sorted(models, key=list_order)],
        "aliases": [a.document() for a in sorted(aliases, key=lambda a: a.id)],
        "groups": [g.document() for g in sorted(groups, key=lambda g: g.name)],
        "upstreams": [u.document() for u in sorted(upstreams, key=lambda u: u.name)],
        "issuers": [i.document() for i in sorted(issuers, key=lambda i: i.name)],
    }


def dump_yaml(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, default_flow_style=False)


def load_yaml(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput("file", f"file: not valid YAML: {exc}") from None
    except RecursionError:  # PyYAML builds nested collections recursively: `[[[[...` 1,000 deep
        raise InvalidInput("file", "file: nested too deeply to be a catalog file") from None


def _entries(document: Any) -> dict[str, list[dict[str, Any]]]:
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise InvalidInput("file", "file: a catalog file is a mapping with the sections models, aliases, "
                           "groups, upstreams, issuers")
    unknown = sorted(set(document) - {kind.collection for kind in KINDS})
    if unknown:
        raise InvalidInput(unknown[0], f"{unknown[0]}: unknown section (expected models, aliases, groups, "
                           "upstreams, issuers)")
    sections: dict[str, list[dict[str, Any]]] = {}
    for section in (kind.collection for kind in KINDS):
        entries = document.get(section) or []
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
