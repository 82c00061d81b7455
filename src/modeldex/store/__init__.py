"""Storage: where the catalog persists. `open_store(url)` picks the backend from a database URL; the
store implements the catalog's repository protocol (`catalog/repository.py`) and discovery's health
store (`discovery/health.py`)."""

from modeldex.catalog.errors import StoreError, StoreUnavailable
from modeldex.store.sql import SqlStore, open_store

__all__ = ["SqlStore", "StoreError", "StoreUnavailable", "open_store"]
