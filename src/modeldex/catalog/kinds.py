"""The one registry of entity kinds: what each is called, its type, the field that names it, and where
it appears (the admin API's collection, the catalog file's section). Everything that needs the list of
kinds (the service, catalog files, the store, the admin API, the CLI) reads it here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from modeldex.catalog.entities import Alias, Entity, Group, Model
from modeldex.catalog.issuers import Issuer
from modeldex.catalog.upstreams import Upstream

E = TypeVar("E", bound=Entity)


@dataclass(frozen=True, slots=True)
class Kind(Generic[E]):
    name: str  # as the change feed and error messages say it: "model"
    type: type[E]
    key_field: str  # the field that names an entity of this kind
    collection: str  # the admin API's path segment and the catalog file's section: "models"

    def key_of(self, entity: E) -> str:
        return str(getattr(entity, self.key_field))


# In the order a catalog file is applied (what others refer to first); removals go in reverse.
KINDS: tuple[Kind[Entity], ...] = (
    Kind("group", Group, "name", "groups"),
    Kind("upstream", Upstream, "name", "upstreams"),
    Kind("model", Model, "id", "models"),
    Kind("alias", Alias, "id", "aliases"),
    Kind("issuer", Issuer, "name", "issuers"),
)
BY_NAME: dict[str, Kind[Entity]] = {kind.name: kind for kind in KINDS}
_BY_TYPE: dict[type[Entity], Kind[Entity]] = {kind.type: kind for kind in KINDS}


def kind_of(entity_type: type[E]) -> Kind[E]:
    return _BY_TYPE[entity_type]  # type: ignore[return-value]


def kind_named(name: str) -> Kind[Entity]:
    return BY_NAME[name]
