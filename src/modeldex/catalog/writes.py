"""Writing one entity inside a write unit, with every rule that comes with it: the checks between
entities (`integrity.py`) before, and an upstream's side effects after. The service and catalog files
both write through here, so no rule is coded twice."""

from __future__ import annotations

from typing import TYPE_CHECKING

from modeldex.catalog.entities import Alias, Entity, Group, Model, model_id_problem
from modeldex.catalog.errors import InvalidInput
from modeldex.catalog.integrity import check_alias, check_model, check_model_removal, check_upstream_removal
from modeldex.catalog.issuers import Issuer
from modeldex.catalog.upstreams import Upstream, remove_discovered

if TYPE_CHECKING:
    from modeldex.catalog.repository import CatalogWriter


# The console's Source filter uses these words for "defined by an operator" and "from any upstream".
RESERVED_UPSTREAM_NAMES = frozenset({"operator", "upstream"})


def check(writer: CatalogWriter, entity: Entity) -> None:
    """The rules between `entity` and the rest of the catalog, as it would be written."""
    if isinstance(entity, Model):
        check_model(writer, entity)
        check_routes(writer, entity)
    elif isinstance(entity, Alias):
        check_alias(writer, entity)
    elif isinstance(entity, Upstream):
        # Here, where settings are written, not in the entity: a stored upstream must still load.
        if entity.name in RESERVED_UPSTREAM_NAMES:
            raise InvalidInput("name", f"name: {entity.name!r} is reserved (it names where models come from: "
                               "defined by an operator, or by any upstream)")
        problem = model_id_problem(entity.prefix + "m") if entity.prefix is not None else None
        if problem is not None:  # how every id it discovers would start; its polls would all fail
            raise InvalidInput("prefix", f"prefix: no model id can start with {entity.prefix!r}: "
                               f"{problem.removeprefix('model id ')}")
    elif isinstance(entity, Issuer) and entity.default_group is not None \
            and writer.get(Group, entity.default_group) is None:
        raise InvalidInput("default_group", f"default_group: group {entity.default_group!r} does not exist "
                           "(add it with `modeldex groups set`)")


def check_routes(writer: CatalogWriter, model: Model) -> None:
    """Every upstream a model routes to exists (one that goes is refused while routes name it)."""
    for index, route in enumerate(model.routes or ()):
        if writer.get(Upstream, route.upstream) is None:
            raise InvalidInput(f"routes.{index}.upstream", f"routes.{index}.upstream: upstream "
                               f"{route.upstream!r} does not exist (add it with `modeldex upstreams add`)")


def create(writer: CatalogWriter, entity: Entity) -> int:
    """Add `entity`; returns its revision."""
    check(writer, entity)
    return writer.create(entity)


def replace(writer: CatalogWriter, entity: Entity, if_match: int | None = None) -> tuple[int, list[str]]:
    """Store `entity` over the one of the same key; returns its revision and the ids of the models that
    left with it (an upstream's discovered models its new settings exclude leave at once)."""
    check(writer, entity)
    before = writer.get(Upstream, entity.name) if isinstance(entity, Upstream) else None
    revision = writer.update(entity, if_match)
    removed = remove_discovered(writer, entity, before) if isinstance(entity, Upstream) and before else []
    return revision, removed


def remove(writer: CatalogWriter, entity_type: type[Entity], key: str, if_match: int | None = None
           ) -> list[str]:
    """Delete the entity; returns the ids of the models that left with it (a removed upstream's
    discovered models go at once, not after their grace period)."""
    removed: list[str] = []
    if entity_type is Model:
        check_model_removal(writer, key)
    elif entity_type is Upstream:
        current = writer.get(Upstream, key)
        if current is not None:
            check_upstream_removal(writer, key)
            removed = remove_discovered(writer, current)
    writer.delete(entity_type, key, if_match)
    return removed
