"""The repository protocol: how the catalog is stored, as the domain needs it. `store/` implements it
(SQLite and PostgreSQL through SQLAlchemy); nothing here knows SQL.

Every write is a unit (`CatalogStore.write`) that increments the catalog version once and records one
change-feed entry per entity it changed, in the same transaction, so readers can tell with one cheap
query whether anything changed and the feed never misses or invents a change.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Protocol, TypeVar

from modeldex.catalog.callers import Scope
from modeldex.catalog.changes import Change
from modeldex.catalog.entities import Entity, Model
from modeldex.catalog.incremental import CatalogDelta
from modeldex.catalog.keys import ApiKey
from modeldex.catalog.policy import AccessPolicy
from modeldex.catalog.retention import Compacted, Retention
from modeldex.catalog.state import CatalogState

E = TypeVar("E", bound=Entity)


class Unchanged:
    """Marks an optional argument that was not given (where None means "clear it")."""


UNCHANGED = Unchanged()


class CatalogReader(Protocol):
    """Typed reads of entities, by their type (`Model`, `Alias`, `Group`, `Upstream`); revisions count an
    entity's updates."""

    def get(self, entity_type: type[E], key: str) -> E | None: ...

    def get_revision(self, entity_type: type[E], key: str) -> tuple[E, int] | None: ...

    def all(self, entity_type: type[E]) -> list[E]: ...

    def all_revisions(self, entity_type: type[E]) -> list[tuple[E, int]]: ...


class CatalogWriter(CatalogReader, Protocol):
    """The operations of one write unit."""

    version: int  # the version this unit commits as
    dry_run: bool

    def create(self, entity: Entity) -> int:
        """Raises AlreadyExists. Returns the new revision."""
        ...

    def update(self, entity: Entity, if_match: int | None = None) -> int:
        """Raises NotFound, PreconditionFailed. Returns the new revision."""
        ...

    def delete(self, entity_type: type[Entity], key: str, if_match: int | None = None) -> None:
        """Raises NotFound, PreconditionFailed."""
        ...

    def get_key(self, name: str) -> ApiKey | None: ...

    def insert_key(self, key: ApiKey) -> None:
        """Raises AlreadyExists if an active key has that name."""
        ...

    def update_key(self, name: str, scope: Scope | None, policy: AccessPolicy | None,
                   if_match: int | None = None, rate_limit: str | Unchanged | None = UNCHANGED) -> ApiKey: ...

    def revoke_key(self, name: str, if_match: int | None = None) -> None: ...


class CatalogStore(CatalogReader, Protocol):
    def current_version(self) -> int:
        """The catalog version: it increases with every committed change."""
        ...

    def load_state(self) -> CatalogState:
        """Models, aliases, groups, upstreams and active keys, read consistently at one version."""
        ...

    def load_delta(self, since: int, max_changes: int) -> CatalogDelta | None:
        """The entities written after version `since`, as stored at the current version, read
        consistently with it; None when the change feed cannot account for every version in between,
        or records more than `max_changes` changes (a full `load_state` is then the way)."""
        ...

    def seed_once(self, models: list[Model]) -> bool:
        """Add `models` if this database was never seeded; returns whether it seeded."""
        ...

    def write(self, actor: str, dry_run: bool = False) -> AbstractContextManager[CatalogWriter]:
        """A write unit: committed if the block ends normally and changed something (and not dry_run)."""
        ...

    def count(self, entity_type: type[Entity]) -> int: ...

    def compact(self, retention: Retention, now: float) -> Compacted:
        """Remove change-feed entries and revoked keys older than `retention` keeps; bumps no version."""
        ...

    def list_keys(self, include_revoked: bool = False) -> list[ApiKey]: ...

    def changes(self, since: int, limit: int) -> list[Change]:
        """Changes with a version above `since`, oldest first."""
        ...

    def history(self, limit: int, before: int | None = None, entity: str | None = None,
                entity_id: str | None = None) -> list[Change]:
        """The last `limit` changes (at versions below `before`; of one entity if given), newest first."""
        ...

    def subscribe(self, on_change: Callable[[], None]) -> Callable[[], None]:
        """Call `on_change` soon after any process commits a change, where the database can say so
        (PostgreSQL's LISTEN/NOTIFY); returns a function that stops it. A no-op elsewhere."""
        ...

    def close(self) -> None: ...
