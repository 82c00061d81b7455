"""Catalog operations with their validation: the one entry point the CLI and the API both use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from modeldex.catalog.keys import ApiKey, Scope, new_key, parse_scope, validate_key_name
from modeldex.catalog.models import Model, new_model

if TYPE_CHECKING:
    from modeldex.store.base import CatalogStore


class Catalog:
    """Validates input, then asks the store to change; the store bumps the catalog version."""

    def __init__(self, store: CatalogStore) -> None:
        self.store = store

    def list_models(self) -> list[Model]:
        return list(self.store.load_state().models)

    def add_model(self, model_id: str, owned_by: str = "system", created: int | None = None) -> Model:
        model = new_model(model_id, owned_by=owned_by, created=created)
        self.store.add_model(model)
        return model

    def remove_model(self, model_id: str) -> None:
        self.store.remove_model(model_id)

    def create_key(self, name: str, scope: str | Scope = Scope.READ) -> tuple[ApiKey, str]:
        """Create a key; the returned secret is the only copy there will ever be."""
        record, secret = new_key(name, parse_scope(scope) if isinstance(scope, str) else scope)
        self.store.insert_key(record)
        return record, secret

    def list_keys(self, include_revoked: bool = False) -> list[ApiKey]:
        return self.store.list_keys(include_revoked=include_revoked)

    def revoke_key(self, name: str) -> None:
        self.store.revoke_key(validate_key_name(name))

    def has_active_keys(self) -> bool:
        return bool(self.store.list_keys(include_revoked=False))
