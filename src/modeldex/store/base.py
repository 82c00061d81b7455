"""The storage interface. SQLite and PostgreSQL both implement it through SQLAlchemy (`sql.py`).

Every write runs in one transaction that also increments the catalog version, so readers can tell
with one cheap query whether anything changed.
"""

from __future__ import annotations

from typing import Protocol

from modeldex.catalog.keys import ApiKey
from modeldex.catalog.models import Model
from modeldex.catalog.state import CatalogState


class StoreError(Exception):
    """The database cannot be used as it is (unreachable, wrong schema version, ...)."""


class CatalogStore(Protocol):
    def current_version(self) -> int:
        """The catalog version: it increases with every committed change."""

    def load_state(self) -> CatalogState:
        """Models and active keys, read consistently at one version."""

    def seed_once(self, models: list[Model]) -> bool:
        """Add `models` if this database was never seeded; returns whether it seeded."""

    def add_model(self, model: Model) -> None:
        """Raises ModelAlreadyExists."""

    def remove_model(self, model_id: str) -> None:
        """Raises ModelNotFound."""

    def insert_key(self, key: ApiKey) -> None:
        """Raises KeyNameTaken if an active key has that name."""

    def list_keys(self, include_revoked: bool = False) -> list[ApiKey]: ...

    def revoke_key(self, name: str) -> None:
        """Raises KeyNotFound if no active key has that name."""

    def close(self) -> None: ...
