"""Rules between entities, checked inside a write unit so they hold for what commits."""

from __future__ import annotations

from typing import TYPE_CHECKING

from modeldex.catalog.entities import Alias, Group, Model
from modeldex.catalog.errors import Conflict, InvalidInput
from modeldex.catalog.policy import AccessPolicy

if TYPE_CHECKING:
    from modeldex.catalog.repository import CatalogWriter


def check_alias(writer: CatalogWriter, alias: Alias) -> None:
    if writer.get(Model, alias.id) is not None:
        raise Conflict(f"alias {alias.id!r} would hide the model of the same id")
    if writer.get(Model, alias.target) is None:
        raise InvalidInput("target", f"target: alias {alias.id!r} points to {alias.target!r}, which is not a model")


def check_model(writer: CatalogWriter, model: Model) -> None:
    if writer.get(Alias, model.id) is not None:
        raise Conflict(f"{model.id!r} is already an alias; remove the alias first")


def check_upstream_removal(writer: CatalogWriter, name: str) -> None:
    routed = sorted(m.id for m in writer.all(Model) if m.routes and any(r.upstream == name for r in m.routes))
    if routed:
        shown = ", ".join(routed[:5]) + (f" and {len(routed) - 5} more" if len(routed) > 5 else "")
        raise Conflict(f"upstream {name!r} is a route of models {shown}; remove those routes first "
                       "(`modeldex routes remove MODEL UPSTREAM`)")


def check_model_removal(writer: CatalogWriter, model_id: str) -> None:
    pointing = sorted(a.id for a in writer.all(Alias) if a.target == model_id)
    if pointing:
        raise Conflict(f"model {model_id!r} is the target of aliases {', '.join(pointing)}; "
                       "remove or retarget them first")


def check_policy(writer: CatalogWriter, policy: AccessPolicy) -> None:
    for name in policy.groups:
        if writer.get(Group, name) is None:
            raise InvalidInput("policy.groups", f"policy.groups: group {name!r} does not exist")
