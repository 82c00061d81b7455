"""Catalog operations with their validation: the one entry point the CLI, the admin API, the Models
routes and catalog files all use. Field rules live on the entities, rules between entities in
`integrity.py` and `writes.py`; the kinds of entity in `kinds.py`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from modeldex.catalog import writes
from modeldex.catalog.callers import Scope
from modeldex.catalog.catalog_file import PlannedChange, apply_document, export_document, plan_digest
from modeldex.catalog.changes import MAX_VERSION, Change, ChangePage
from modeldex.catalog.entities import DISCOVERY_FIELDS, Entity, Model, Route, parse
from modeldex.catalog.errors import InvalidInput, NotFound, PlanChanged
from modeldex.catalog.integrity import check_policy
from modeldex.catalog.keys import ApiKey, new_key, parse_scope, validate_key_name
from modeldex.catalog.kinds import kind_named
from modeldex.catalog.limits import parse_limit
from modeldex.catalog.policy import ALL_MODELS, AccessPolicy, Decision, Visibility
from modeldex.catalog.repository import UNCHANGED, Unchanged
from modeldex.catalog.retention import Compacted, Retention
from modeldex.catalog.upstreams import Upstream, model_routes

if TYPE_CHECKING:
    from modeldex.catalog.repository import CatalogStore, CatalogWriter


class Catalog:
    """Operations on the catalog, each one write unit; `actor` is recorded in the change feed.

    `after_write` runs after every committed write: a server passes its refresh, so the process that
    made a change serves it from its next request on (read-your-writes)."""

    def __init__(self, store: CatalogStore, actor: str = "system",
                 after_write: Callable[[], object] | None = None) -> None:
        self.store = store
        self.actor = actor
        self._after_write = after_write

    @contextmanager
    def _write(self, dry_run: bool = False) -> Iterator[CatalogWriter]:
        with self.store.write(self.actor, dry_run=dry_run) as writer:
            yield writer
        if self._after_write is not None and not dry_run:
            self._after_write()

    def written_elsewhere(self) -> None:
        """Something wrote to the store around the service (a discovery sync): refresh as after a write."""
        if self._after_write is not None:
            self._after_write()

    # --- models, aliases, groups, upstreams -------------------------------------------------------

    def count_models(self) -> int:
        return self.store.count(Model)

    def entries(self, kind: str) -> list[tuple[Entity, int]]:
        return self.store.all_revisions(kind_named(kind).type)

    def get(self, kind: str, key: str) -> tuple[Entity, int]:
        found = self.store.get_revision(kind_named(kind).type, key)
        if found is None:
            raise NotFound(kind, key)
        return found

    def create(self, kind: str, data: dict[str, Any]) -> tuple[Entity, int]:
        entity_type = kind_named(kind).type
        if entity_type is Model:
            _refuse_discovery_fields(data)
        entity = parse(entity_type, data)
        with self._write() as writer:
            if isinstance(entity, Model) and _is_discovered(writer.get(Model, entity.id)):
                return entity, writes.replace(writer, entity)[0]  # the operator's entry wins over a discovered one
            return entity, writes.create(writer, entity)

    def update(self, kind: str, key: str, fields: dict[str, Any], if_match: int | None = None
               ) -> tuple[Entity, int]:
        """Merge `fields` into the entity (null removes an optional field); the key cannot change."""
        entity_kind = kind_named(kind)
        key_field = entity_kind.key_field
        if key_field in fields and fields[key_field] != key:
            raise InvalidInput(key_field, f"{key_field}: cannot be changed (delete and create instead)")
        if entity_kind.type is Model:
            _refuse_discovery_fields(fields)
        _refuse_removing_required(entity_kind.type, fields)
        with self._write() as writer:
            current = writer.get(entity_kind.type, key)
            if current is None:
                raise NotFound(kind, key)
            # Editing a discovered model makes it the operator's: discovery leaves it alone from then on.
            document = {k: v for k, v in current.document().items() if k not in DISCOVERY_FIELDS}
            # A null for a field the entity does not have is kept, so that parse() refuses it as unknown
            # (a typo in `--clear` must not succeed, changing nothing).
            known = entity_kind.type.model_fields
            merged = {k: v for k, v in {**document, **fields}.items() if v is not None or k not in known}
            entity = parse(entity_kind.type, merged)
            revision, _removed = writes.replace(writer, entity, if_match)
            return entity, revision

    def delete(self, kind: str, key: str, if_match: int | None = None) -> None:
        with self._write() as writer:
            writes.remove(writer, kind_named(kind).type, key, if_match)

    # --- routes (inference: which upstream serves a model) ---------------------------------------------

    def routes(self) -> list[dict[str, Any]]:
        """Every model's routes, and each discovered model's implicit one (to the upstream that listed it)."""
        upstreams = {upstream.name: upstream for upstream in self.store.all(Upstream)}
        rows: list[dict[str, Any]] = []
        for model in self.store.all(Model):
            for upstream, upstream_model, weight in model_routes(model, upstreams):
                row: dict[str, Any] = {"model": model.id, "upstream": upstream, "upstream_model": upstream_model}
                rows.append({**row, "weight": weight} if weight is not None else {**row, "discovered": True})
        return sorted(rows, key=lambda row: (row["model"], row["upstream"]))

    def add_route(self, model_id: str, upstream: str, upstream_model: str | None = None, weight: int = 1
                  ) -> tuple[Entity, int]:
        """Route `model_id` to `upstream` too (replacing a route there for the same upstream model). Routing
        a discovered model makes it the operator's, as editing it does."""
        try:
            route = parse(Route, {"upstream": upstream, "model": upstream_model, "weight": weight})
        except InvalidInput as exc:  # named as the caller named it: a route's `model` is its `upstream_model`
            if exc.field != "model":
                raise
            raise InvalidInput("upstream_model", "upstream_model" + exc.message.removeprefix("model")) from None
        with self._write() as writer:
            current = writer.get(Model, model_id)
            if current is None:
                raise NotFound("model", model_id)
            if writer.get(Upstream, route.upstream) is None:  # not `routes.N.upstream`, which was not sent
                raise InvalidInput("upstream", f"upstream: upstream {route.upstream!r} does not exist "
                                   "(add it with `modeldex upstreams add`)")
            kept = [r for r in current.routes or () if (r.upstream, r.model) != (route.upstream, route.model)]
            return self._with_routes(writer, current, [*kept, route])

    def remove_route(self, model_id: str, upstream: str, upstream_model: str | None = None) -> tuple[Entity, int]:
        """Remove the model's routes to `upstream` (only the one for `upstream_model`, if given)."""
        with self._write() as writer:
            current = writer.get(Model, model_id)
            if current is None:
                raise NotFound("model", model_id)
            routes = current.routes or ()
            kept = [r for r in routes if not (r.upstream == upstream
                                              and (upstream_model is None or r.model == upstream_model))]
            if len(kept) == len(routes):
                raise NotFound("route", f"{model_id} -> {upstream}" + (f" ({upstream_model})" if upstream_model else ""))
            return self._with_routes(writer, current, kept)

    @staticmethod
    def _with_routes(writer: CatalogWriter, current: Model, routes: list[Route]) -> tuple[Entity, int]:
        document = {k: v for k, v in current.document().items() if k not in (*DISCOVERY_FIELDS, "routes")}
        entity = parse(Model, {**document, **({"routes": [r.document() for r in routes]} if routes else {})})
        revision, _removed = writes.replace(writer, entity)
        return entity, revision

    # --- keys ----------------------------------------------------------------------------------------

    def create_key(self, name: str, scope: str | Scope = Scope.READ,
                   policy: AccessPolicy | dict[str, Any] | None = None, rate_limit: str | None = None
                   ) -> tuple[ApiKey, str]:
        """Create a key; the returned secret is the only copy there will ever be."""
        access = _policy(policy)
        record, secret = new_key(name, parse_scope(scope) if isinstance(scope, str) else scope, access,
                                 _rate_limit(rate_limit))
        with self._write() as writer:
            check_policy(writer, access)
            writer.insert_key(record)
        return record, secret

    def update_key(self, name: str, scope: str | None = None, policy: dict[str, Any] | None = None,
                   if_match: int | None = None, rate_limit: str | Unchanged | None = UNCHANGED) -> ApiKey:
        """Change a key's scope, policy or rate limit (`rate_limit=None` returns it to the default)."""
        access = _policy(policy) if policy is not None else None
        limit = rate_limit if isinstance(rate_limit, Unchanged) else _rate_limit(rate_limit)
        with self._write() as writer:
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
        with self._write() as writer:
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
        return export_document([m for m in state.models if m.source is None], list(state.aliases),
                               list(state.groups), state.upstreams, state.issuers)

    def apply(self, document: Any, prune: bool = False, dry_run: bool = False,
              expected_plan: str | None = None) -> tuple[int, list[PlannedChange]]:
        """Make the catalog match `document` atomically. Returns (version, changes); a dry run commits
        nothing and reports the version as it is. With `expected_plan` (a preview's `plan_digest`), the
        changes must be the ones the preview showed, or nothing is applied (PlanChanged)."""
        with self._write(dry_run=dry_run) as writer:
            planned = apply_document(writer, document, prune)
            if expected_plan is not None and plan_digest(planned) != expected_plan:
                raise PlanChanged()
            version = writer.version if planned and not dry_run else writer.version - 1
        return version, planned

    # --- the change feed -----------------------------------------------------------------------------

    def compact(self, retention: Retention, now: float) -> Compacted:
        """Forget change-feed entries and revoked keys older than `retention` keeps."""
        return self.store.compact(retention, now)

    def changes(self, since: int = 0, limit: int = 1000) -> list[Change]:
        """Changes after version `since`, oldest first. Versions are 64-bit signed integers in both
        databases, so a `since` past them is refused rather than left to overflow the query."""
        if not 0 <= since <= MAX_VERSION:
            raise InvalidInput("since", f"since: must be between 0 and {MAX_VERSION}")
        if not 1 <= limit <= MAX_VERSION:
            raise InvalidInput("limit", f"limit: must be between 1 and {MAX_VERSION}")
        return self.store.changes(since, limit)

    def change_page(self, since: int, limit: int) -> ChangePage:
        """The changes after version `since`, for a reader that pages through the feed: it asks again from
        the last entry's version while `has_more`, then, later, from the page's `version`.

        A page never ends inside a version (a catalog file applied, the seed: many entries at one version),
        or the reader, going on from that version, would never see the rest of it: it ends before that
        version, or, when that version alone has more than `limit` entries, holds all of them. The catalog
        version is read first and the page holds nothing after it: every version up to it has committed
        whole (writers are serialized), so a reader going on from it skips nothing, even as writes go on."""
        version = self.version()
        entries = [c for c in self.changes(since, limit + 1) if c.version <= version]
        if len(entries) <= limit:
            return ChangePage(entries, version, False)
        last = entries[limit - 1].version
        if entries[limit].version != last:
            return ChangePage(entries[:limit], version, True)
        whole = [c for c in entries[:limit] if c.version != last]
        if whole:
            return ChangePage(whole, version, True)
        fetch = limit + 1  # the first version alone fills the page: read until it ends
        while True:
            fetch = min(fetch * 4, MAX_VERSION)
            read = self.store.changes(since, fetch)
            if len(read) < fetch or read[-1].version != last:
                break
        return ChangePage([c for c in read if c.version == last], version,
                          any(last < c.version <= version for c in read))

    def history(self, limit: int = 50, before: int | None = None, entity: str | None = None,
                key: str | None = None) -> list[Change]:
        """The last changes (below version `before`; of one entity, given as the feed names it: "model",
        "key", ... and its key), newest first, as far as the feed is kept."""
        return self.store.history(limit, before, entity, key)

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


def _refuse_removing_required(entity_type: type[Entity], fields: dict[str, Any]) -> None:
    """null removes an optional field; a field that always has a value (`created`, `owned_by`) cannot be
    removed, or it would silently fall back to its default (`created` to now)."""
    for name, value in fields.items():
        info = entity_type.model_fields.get(name)
        if value is None and info is not None and (info.is_required() or info.default is not None
                                                   or info.default_factory is not None):
            raise InvalidInput(name, f"{name}: cannot be removed (give it a new value instead)")


def _refuse_discovery_fields(data: dict[str, Any]) -> None:
    for name in DISCOVERY_FIELDS:
        if name in data:
            raise InvalidInput(name, f"{name}: set by discovery only (operator-defined models have none)")


def _is_discovered(found: Model | None) -> bool:
    return found is not None and found.source is not None


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
