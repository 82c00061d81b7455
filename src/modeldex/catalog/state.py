"""CatalogState: everything a server needs to answer requests, read from the store in one go."""

from __future__ import annotations

from dataclasses import dataclass

from modeldex.catalog.keys import ApiKey
from modeldex.catalog.models import Alias, Group, Model


@dataclass(frozen=True, slots=True)
class CatalogState:
    """A consistent picture of the catalog at one version.

    `models` are in list order; `keys` holds active keys only (a revoked key simply is not there).
    """

    version: int
    models: tuple[Model, ...]
    keys: tuple[ApiKey, ...]
    aliases: tuple[Alias, ...] = ()
    groups: tuple[Group, ...] = ()
