"""Storage: where the catalog persists. `open_store(url)` picks the backend from a database URL."""

from modeldex.store.base import CatalogStore, StoreError, StoreUnavailable
from modeldex.store.sql import SqlStore, open_store

__all__ = ["CatalogStore", "SqlStore", "StoreError", "StoreUnavailable", "open_store"]
