"""CatalogState: everything a server needs to answer requests, read from the store in one go."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from modeldex.catalog.entities import Alias, Group, Model
from modeldex.catalog.issuers import Issuer
from modeldex.catalog.keys import ApiKey
from modeldex.catalog.upstreams import Upstream


@dataclass(frozen=True, slots=True)
class CatalogState:
    """A consistent picture of the catalog at one version.

    `models` are in list order; `keys` holds active keys only (a revoked key simply is not there);
    aliases, groups, upstreams and issuers are in order of their ids or names. Upstreams are here so that serving
    knows, without a database read, which upstream a model comes from.
    """

    version: int
    models: tuple[Model, ...]
    keys: tuple[ApiKey, ...]
    aliases: tuple[Alias, ...] = ()
    groups: tuple[Group, ...] = ()
    upstreams: tuple[Upstream, ...] = ()
    issuers: tuple[Issuer, ...] = ()  # trusted identity providers, by name
    # `models` by id, made on first use or handed over by whoever derived this state (never mutated).
    _by_id: Mapping[str, Model] | None = field(default=None, compare=False, repr=False)

    @property
    def models_by_id(self) -> Mapping[str, Model]:
        if self._by_id is None:
            object.__setattr__(self, "_by_id", {model.id: model for model in self.models})
        assert self._by_id is not None
        return self._by_id
