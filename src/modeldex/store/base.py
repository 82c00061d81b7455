"""The storage interface. SQLite and PostgreSQL both implement it through SQLAlchemy (`sql.py`).

Every write is a unit (`CatalogStore.write`) that increments the catalog version once and records one
change-feed entry per entity it changed, in the same transaction, so readers can tell with one cheap
query whether anything changed and the feed never misses or invents a change.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from collections.abc import Callable
from typing import Protocol

from modeldex.catalog.changes import Change
from modeldex.catalog.incremental import CatalogDelta
from modeldex.catalog.keys import ApiKey, Scope
from modeldex.catalog.models import Entity, Model
from modeldex.catalog.policy import AccessPolicy
from modeldex.catalog.state import CatalogState
from modeldex.catalog.upstreams import UpstreamHealth

KINDS = ("model", "alias", "group", "upstream")


class Unchanged:
    """Marks an optional argument that was not given (where None means "clear it")."""


UNCHANGED = Unchanged()


class StoreError(Exception):
    """The database cannot be used as it is (unreachable, wrong schema version, ...)."""


class StoreUnavailable(StoreError):
    """The database cannot be reached right now; the operation may succeed later."""


class CatalogWriter(Protocol):
    """The operations of one write unit. `kind` is one of KINDS; revisions count an entity's updates."""

    version: int
    dry_run: bool

    def get(self, kind: str, key: str) -> tuple[Entity, int] | None: ...

    def all(self, kind: str) -> list[tuple[Entity, int]]: ...

    def create(self, kind: str, entity: Entity) -> int:
        """Raises AlreadyExists. Returns the new revision."""

    def update(self, kind: str, entity: Entity, if_match: int | None = None) -> int:
        """Raises NotFound, PreconditionFailed. Returns the new revision."""

    def delete(self, kind: str, key: str, if_match: int | None = None) -> None:
        """Raises NotFound, PreconditionFailed."""

    def get_key(self, name: str) -> ApiKey | None: ...

    def insert_key(self, key: ApiKey) -> None:
        """Raises AlreadyExists if an active key has that name."""

    def update_key(self, name: str, scope: Scope | None, policy: AccessPolicy | None,
                   if_match: int | None = None, rate_limit: str | None | Unchanged = ...) -> ApiKey: ...

    def revoke_key(self, name: str, if_match: int | None = None) -> None: ...


class CatalogStore(Protocol):
    def current_version(self) -> int:
        """The catalog version: it increases with every committed change."""

    def load_state(self) -> CatalogState:
        """Models, aliases, groups and active keys, read consistently at one version."""

    def load_delta(self, since: int, max_changes: int) -> CatalogDelta | None:
        """The entities written after version `since`, as stored at the current version, read
        consistently with it; None when the change feed cannot account for every version in between,
        or records more than `max_changes` changes (a full `load_state` is then the way)."""

    def seed_once(self, models: list[Model]) -> bool:
        """Add `models` if this database was never seeded; returns whether it seeded."""

    def write(self, actor: str, dry_run: bool = False) -> AbstractContextManager[CatalogWriter]:
        """A write unit: committed if the block ends normally and changed something (and not dry_run)."""

    def read(self, kind: str, key: str) -> tuple[Entity, int] | None: ...

    def read_all(self, kind: str) -> list[tuple[Entity, int]]: ...

    def count(self, kind: str) -> int: ...

    def list_keys(self, include_revoked: bool = False) -> list[ApiKey]: ...

    def changes(self, since: int, limit: int) -> list[Change]:
        """Changes with a version above `since`, oldest first."""

    def upstream_health(self, now: float) -> dict[str, UpstreamHealth]:
        """How polling went, per upstream name (`polling_by` set while a lease is held at `now`)."""

    def due_upstreams(self, now: float) -> list[str]:
        """Names of upstreams due for a poll whose lease nobody holds."""

    def claim_upstream(self, name: str, owner: str, now: float, lease_s: float, force: bool = False) -> bool:
        """Take the poll lease of `name` for `lease_s` seconds if it is free (and due, unless `force`);
        returns whether this caller got it. At most one holder at a time across processes."""

    def finish_upstream(self, name: str, owner: str, health: UpstreamHealth, next_poll_at: float) -> None:
        """Record the health after a poll and release the lease held by `owner`."""

    def subscribe(self, on_change: Callable[[], None]) -> Callable[[], None]:
        """Call `on_change` soon after any process commits a change, where the database can say so
        (PostgreSQL's LISTEN/NOTIFY); returns a function that stops it. A no-op elsewhere."""

    def close(self) -> None: ...
