"""Catalog operations with their validation: the one entry point the CLI, the admin API and catalog
files all use. Field rules live on the entities; rules between entities live here."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from modeldex.catalog.changes import Change
from modeldex.catalog.catalog_file import PlannedChange, apply_document, export_document
from modeldex.catalog.errors import InvalidInput, NotFound
from modeldex.catalog.integrity import check_alias, check_model, check_model_removal, check_policy
from modeldex.catalog.keys import ApiKey, Scope, new_key, parse_scope, validate_key_name
from modeldex.catalog.models import (DISCOVERY_FIELDS, Alias, Entity, Group, Model, list_order, new_model,
                                     parse)
from modeldex.catalog.policy import ALL_MODELS, AccessPolicy, Decision, Visibility
from modeldex.catalog.upstreams import Upstream, remove_discovered
from modeldex.ops.ratelimit import parse_limit
from modeldex.store.base import UNCHANGED, Unchanged

if TYPE_CHECKING:
    from modeldex.store.base import CatalogStore, CatalogWriter

ENTITY_TYPES: dict[str, tuple[type[Entity], str]] = {
    "model": (Model, "id"),
    "alias": (Alias, "id"),
    "group": (Group, "name"),
    "upstream": (Upstream, "name"),
}


class Catalog:
    """Operations on the catalog, each one write unit; `actor` is recorded in the change feed."""

    def __init__(self, store: CatalogStore, actor: str = "system") -> None:
        self.store = store
        self.actor = actor

    # --- models, aliases, groups ---------------------------------------------------------------------

    def list_models(self) -> list[Model]:
        return sorted((m for m, _ in self.store.read_all("model")), key=list_order)  # type: ignore[misc]

    def count_models(self) -> int:
        return self.store.count("model")

    def list(self, kind: str) -> list[tuple[Entity, int]]:
        return self.store.read_all(kind)

    def get(self, kind: str, key: str) -> tuple[Entity, int]:
        found = self.store.read(kind, key)
        if found is None:
            raise NotFound(kind, key)
        return found

    def create(self, kind: str, data: dict[str, Any]) -> tuple[Entity, int]:
        entity_type, _key_field = ENTITY_TYPES[kind]
        if kind == "model":
            _refuse_discovery_fields(data)
        entity = parse(entity_type, data)
        with self.store.write(self.actor) as writer:
            self._check(writer, kind, entity)
            if isinstance(entity, Model) and _is_discovered(writer.get("model", entity.id)):
                return entity, writer.update(kind, entity)  # the operator's entry wins over a discovered one
            return entity, writer.create(kind, entity)

    def update(self, kind: str, key: str, fields: dict[str, Any], if_match: int | None = None
               ) -> tuple[Entity, int]:
        """Merge `fields` into the entity (null removes an optional field); the key cannot change."""
        entity_type, key_field = ENTITY_TYPES[kind]
        if key_field in fields and fields[key_field] != key:
            raise InvalidInput(key_field, f"{key_field}: cannot be changed (delete and create instead)")
        if kind == "model":
            _refuse_discovery_fields(fields)
        with self.store.write(self.actor) as writer:
            current = writer.get(kind, key)
            if current is None:
                raise NotFound(kind, key)
            # Editing a discovered model makes it the operator's: discovery leaves it alone from then on.
            document = {k: v for k, v in current[0].document().items() if k not in DISCOVERY_FIELDS}
            merged = {k: v for k, v in {**document, **fields}.items() if v is not None}
            entity = parse(entity_type, merged)
            self._check(writer, kind, entity)
            revision = writer.update(kind, entity, if_match)
            if isinstance(entity, Upstream):
                remove_discovered(writer, entity, only_excluded=True)
            return entity, revision

    def delete(self, kind: str, key: str, if_match: int | None = None) -> None:
        with self.store.write(self.actor) as writer:
            if kind == "model":
                check_model_removal(writer, key)
            if kind == "upstream":
                current = writer.get(kind, key)
                if current is not None:
                    remove_discovered(writer, current[0], only_excluded=False)  # type: ignore[arg-type]
            writer.delete(kind, key, if_match)

    @staticmethod
    def _check(writer: CatalogWriter, kind: str, entity: Entity) -> None:
        if isinstance(entity, Model):
            check_model(writer, entity)
        elif isinstance(entity, Alias):
            check_alias(writer, entity)

    def add_model(self, model_id: str, owned_by: str = "system", created: int | None = None,
                  **metadata: Any) -> Model:
        model = new_model(model_id, owned_by=owned_by, created=created, **metadata)
        with self.store.write(self.actor) as writer:
            check_model(writer, model)
            writer.create("model", model)
        return model

    def remove_model(self, model_id: str) -> None:
        self.delete("model", model_id)

    # --- keys ----------------------------------------------------------------------------------------

    def create_key(self, name: str, scope: str | Scope = Scope.READ,
                   policy: AccessPolicy | dict[str, Any] | None = None, rate_limit: str | None = None
                   ) -> tuple[ApiKey, str]:
        """Create a key; the returned secret is the only copy there will ever be."""
        access = _policy(policy)
        record, secret = new_key(name, parse_scope(scope) if isinstance(scope, str) else scope, access,
                                 _rate_limit(rate_limit))
        with self.store.write(self.actor) as writer:
            check_policy(writer, access)
            writer.insert_key(record)
        return record, secret

    def update_key(self, name: str, scope: str | None = None, policy: dict[str, Any] | None = None,
                   if_match: int | None = None, rate_limit: str | None | Unchanged = UNCHANGED) -> ApiKey:
        """Change a key's scope, policy or rate limit (`rate_limit=None` returns it to the default)."""
        access = _policy(policy) if policy is not None else None
        limit = rate_limit if isinstance(rate_limit, Unchanged) else _rate_limit(rate_limit)
        with self.store.write(self.actor) as writer:
            if access is not None:
                check_policy(writer, access)
            return writer.update_key(validate_key_name(name), parse_scope(scope) if scope else None, access,
                                     if_match, limit)

    def get_key(self, name: str) -> ApiKey:
        for key in self.store.list_keys():
            if key.name == name:
                return key
        raise NotFound("key", name)

    def list_keys(self, include_revoked: bool = False) -> list[ApiKey]:
        return self.store.list_keys(include_revoked=include_revoked)

    def revoke_key(self, name: str, if_match: int | None = None) -> None:
        with self.store.write(self.actor) as writer:
            writer.revoke_key(validate_key_name(name), if_match)

    def has_active_keys(self) -> bool:
        return bool(self.store.list_keys(include_revoked=False))

    def explain(self, key_name: str, model_id: str) -> Decision:
        """Whether the key sees the model, and which rule decided: the same function the API serves by."""
        key = self.get_key(key_name)
        state = self.store.load_state()
        return Visibility(
            key.policy,
            {m.id: m for m in state.models},
            {a.id: a for a in state.aliases},
            {g.name: g for g in state.groups},
            time.time(),
        ).decide(model_id)

    # --- the catalog as a file ----------------------------------------------------------------------

    def export(self) -> dict[str, Any]:
        """What the operator defined: discovered models come back from their upstreams, so are left out."""
        state = self.store.load_state()
        upstreams = [u for u, _rev in self.store.read_all("upstream")]
        return export_document([m for m in state.models if m.source is None], list(state.aliases),
                               list(state.groups), upstreams)  # type: ignore[arg-type]

    def apply(self, document: Any, prune: bool = False, dry_run: bool = False) -> tuple[int, list[PlannedChange]]:
        """Make the catalog match `document` atomically. Returns (version, changes); a dry run commits
        nothing and reports the version as it is."""
        with self.store.write(self.actor, dry_run=dry_run) as writer:
            planned = apply_document(writer, document, prune)
            version = writer.version if planned and not dry_run else writer.version - 1
        return version, planned

    # --- the change feed -----------------------------------------------------------------------------

    def changes(self, since: int = 0, limit: int = 1000) -> list[Change]:
        return self.store.changes(since, limit)

    def version(self) -> int:
        return self.store.current_version()


def _rate_limit(value: str | None) -> str | None:
    """A key's own limit, normalized: None (or "default") follows the server's default limit;
    "unlimited" (or "off") exempts the key; "600/m", "20/s", "100/10m" are limits of its own."""
    if value is None or value.strip().lower() in ("", "default"):
        return None
    try:
        limit = parse_limit(value)
    except ValueError as exc:
        raise InvalidInput("rate_limit", f"rate_limit: {exc}") from None
    return "unlimited" if limit is None else str(limit)


def _refuse_discovery_fields(data: dict[str, Any]) -> None:
    for name in DISCOVERY_FIELDS:
        if name in data:
            raise InvalidInput(name, f"{name}: set by discovery only (operator-defined models have none)")


def _is_discovered(found: tuple[Entity, int] | None) -> bool:
    return found is not None and getattr(found[0], "source", None) is not None


def _policy(policy: AccessPolicy | dict[str, Any] | None) -> AccessPolicy:
    if policy is None:
        return ALL_MODELS
    if isinstance(policy, AccessPolicy):
        return policy
    try:
        return parse(AccessPolicy, policy)
    except InvalidInput as exc:
        raise InvalidInput(f"policy.{exc.field}" if exc.field != "body" else "policy",
                           f"policy: {exc.message}") from None
