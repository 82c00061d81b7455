"""The catalog as a file: models, aliases, groups and upstreams (never keys, never discovered models),
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

from modeldex.catalog.errors import CatalogError, Conflict, InvalidInput
from modeldex.catalog.integrity import check_alias, check_model, check_model_removal
from modeldex.catalog.models import DISCOVERY_FIELDS, Alias, Entity, Group, Model, list_order, parse
from modeldex.catalog.upstreams import Upstream, remove_discovered

if TYPE_CHECKING:
    from modeldex.store.base import CatalogWriter

SECTIONS: dict[str, tuple[str, type[Entity], str]] = {
    # section: (kind, entity type, key field); applied in this order, removals in the reverse one
    "groups": ("group", Group, "name"),
    "upstreams": ("upstream", Upstream, "name"),
    "models": ("model", Model, "id"),
    "aliases": ("alias", Alias, "id"),
}


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
                    upstreams: Sequence[Upstream] = ()) -> dict[str, Any]:
    return {
        "models": [m.document() for m in sorted(models, key=list_order)],
        "aliases": [a.document() for a in sorted(aliases, key=lambda a: a.id)],
        "groups": [g.document() for g in sorted(groups, key=lambda g: g.name)],
        "upstreams": [u.document() for u in sorted(upstreams, key=lambda u: u.name)],
    }


def dump_yaml(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, default_flow_style=False)


def load_yaml(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput("file", f"file: not valid YAML: {exc}") from None


def _entries(document: Any) -> dict[str, list[dict[str, Any]]]:
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise InvalidInput("file", "file: a catalog file is a mapping with the sections models, aliases, "
                           "groups, upstreams")
    unknown = sorted(set(document) - set(SECTIONS))
    if unknown:
        raise InvalidInput(unknown[0], f"{unknown[0]}: unknown section (expected models, aliases, groups, "
                           "upstreams)")
    sections: dict[str, list[dict[str, Any]]] = {}
    for section in SECTIONS:
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
    for section, (kind, entity_type, key_field) in SECTIONS.items():
        current = {key: entity for key, (entity, _rev) in _by_key(writer, kind, key_field).items()}
        wanted: dict[str, Entity] = {}
        for index, entry in enumerate(sections[section]):
            where = f"{section}[{index}]"
            key = entry.get(key_field)
            label = f"{where} ({key_field} {key!r})" if isinstance(key, str) else where
            if kind == "model" and "created" not in entry and isinstance(key, str) and key in current:
                entry = {**entry, "created": current[key].created}  # type: ignore[attr-defined]
            try:
                if kind == "model" and (field := next((f for f in DISCOVERY_FIELDS if f in entry), None)):
                    raise InvalidInput(field, f"{field}: set by discovery only; a file defines its own models")
                entity = parse(entity_type, entry)
            except InvalidInput as exc:
                raise InvalidInput(f"{where}.{exc.field}", f"{label}: {exc.message}") from None
            if key in wanted:
                raise InvalidInput(where, f"{label}: appears twice in the file")
            wanted[str(key)] = entity
        desired[kind] = wanted

    planned: list[PlannedChange] = []
    for section, (kind, _entity_type, key_field) in SECTIONS.items():
        current = _by_key(writer, kind, key_field)
        for key, entity in desired[kind].items():
            label = f"{section} ({key_field} {key!r})"
            try:
                if isinstance(entity, Model):
                    check_model(writer, entity)
                elif isinstance(entity, Alias):
                    check_alias(writer, entity)
                if key not in current:
                    writer.create(kind, entity)
                    planned.append(PlannedChange("create", kind, key))
                elif current[key][0] != entity:
                    before, after = current[key][0].document(), entity.document()
                    fields = tuple(sorted(f for f in before.keys() | after.keys() if before.get(f) != after.get(f)))
                    writer.update(kind, entity)
                    planned.append(PlannedChange("update", kind, key, fields))
                    if isinstance(entity, Upstream):  # models its new settings exclude leave at once
                        planned += [PlannedChange("delete", "model", model_id)
                                    for model_id in remove_discovered(writer, entity, only_excluded=True)]
            except CatalogError as exc:
                raise _labelled(exc, label) from None
    if prune:
        for section, (kind, _entity_type, key_field) in reversed(list(SECTIONS.items())):
            existing = _by_key(writer, kind, key_field)
            for key in sorted(set(existing) - set(desired[kind])):
                entity = existing[key][0]
                if isinstance(entity, Model) and entity.source is not None:
                    continue  # discovered: its upstream decides
                try:
                    if kind == "model":
                        check_model_removal(writer, key)
                    if isinstance(entity, Upstream):
                        planned += [PlannedChange("delete", "model", model_id)
                                    for model_id in remove_discovered(writer, entity, only_excluded=False)]
                    writer.delete(kind, key)
                except CatalogError as exc:
                    raise _labelled(exc, f"pruning {kind} {key!r}") from None
                planned.append(PlannedChange("delete", kind, key))
    return planned


def _by_key(writer: CatalogWriter, kind: str, key_field: str) -> dict[str, tuple[Entity, int]]:
    return {getattr(entity, key_field): (entity, rev) for entity, rev in writer.all(kind)}


def _labelled(exc: CatalogError, label: str) -> CatalogError:
    """The same problem, saying which entry of the file it is about."""
    if isinstance(exc, InvalidInput):
        return InvalidInput(exc.field, f"{label}: {exc.message}")
    return Conflict(f"{label}: {exc}")
