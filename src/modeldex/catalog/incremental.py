"""Catching up on a few changes without reloading the catalog.

A refresh at 100,000 models used to read and rebuild everything for one added model. The store reads,
in one snapshot, the catalog version and the current form of every entity the change feed says was
written since a known version (a `CatalogDelta`); `apply_delta` folds it into the previous state. The
result equals what `load_state` would read at that version, which the tests check.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from modeldex.catalog.entities import Alias, Group, Model, list_order
from modeldex.catalog.issuers import Issuer
from modeldex.catalog.keys import ApiKey
from modeldex.catalog.state import CatalogState
from modeldex.catalog.upstreams import Upstream

T = TypeVar("T")
# Up to this many changes, bisecting each into a copy of a sorted list beats filtering and sorting it.
_BISECT_MAX = 64


@dataclass(frozen=True, slots=True)
class CatalogDelta:
    """What changed from version `since` to `version`: each written entity as stored at `version`,
    by its key, or None if it is gone (deleted; for keys: no active key has that name any more)."""

    since: int
    version: int
    models: Mapping[str, Model | None] = field(default_factory=dict)
    aliases: Mapping[str, Alias | None] = field(default_factory=dict)
    groups: Mapping[str, Group | None] = field(default_factory=dict)
    keys: Mapping[str, ApiKey | None] = field(default_factory=dict)  # by key name
    upstreams: Mapping[str, Upstream | None] = field(default_factory=dict)
    issuers: Mapping[str, Issuer | None] = field(default_factory=dict)


def replace_sorted(items: Sequence[T], removed: Sequence[T], added: Sequence[T],
                   order: Callable[[T], Any]) -> list[T]:
    """`items` (sorted by `order`, whose values are unique) without `removed` and with `added`, still
    sorted. A few changes are bisected in place: a copy of the list plus a short move per change,
    instead of a pass over every item."""
    if not removed and not added:
        return list(items)
    if len(removed) + len(added) > _BISECT_MAX:
        gone = {order(item) for item in removed}
        result = [item for item in items if order(item) not in gone]
        result.extend(added)
        result.sort(key=order)  # timsort: two sorted runs, merged in linear time
        return result
    result = list(items)
    for item in removed:
        position = bisect_left(result, order(item), key=order)
        if position == len(result) or order(result[position]) != order(item):
            raise LookupError(f"{item!r} is not in the sorted items")
        del result[position]
    for item in added:
        insort(result, item, key=order)
    return result


def _replaced(items: Iterable[T], changed: Mapping[str, T | None], key_of: Callable[[T], str]
              ) -> tuple[T, ...]:
    """A small collection with `changed` applied, sorted by key (as `load_state` orders it)."""
    merged = {key_of(item): item for item in items}
    for key, item in changed.items():
        if item is None:
            merged.pop(key, None)
        else:
            merged[key] = item
    return tuple(merged[key] for key in sorted(merged))


def apply_delta(state: CatalogState, delta: CatalogDelta) -> CatalogState:
    """The state at `delta.version`, from the state at `delta.since`."""
    if delta.since != state.version:
        raise ValueError(f"a delta from version {delta.since} cannot apply to version {state.version}")
    models, by_id = state.models, state.models_by_id
    if delta.models:
        removed = [old for model_id in delta.models if (old := by_id.get(model_id)) is not None]
        added = [model for model in delta.models.values() if model is not None]
        models = tuple(replace_sorted(state.models, removed, added, list_order))
        by_id = dict(by_id)  # the previous state's dict is still in use by whoever serves it
        for model_id, model in delta.models.items():
            if model is None:
                by_id.pop(model_id, None)
            else:
                by_id[model_id] = model
    keys = state.keys
    if delta.keys:
        kept = [key for key in state.keys if key.name not in delta.keys]
        kept += [key for key in delta.keys.values() if key is not None]
        keys = tuple(sorted(kept, key=lambda key: key.name))
    return CatalogState(
        version=delta.version,
        models=models,
        keys=keys,
        aliases=_replaced(state.aliases, delta.aliases, lambda a: a.id) if delta.aliases else state.aliases,
        groups=_replaced(state.groups, delta.groups, lambda g: g.name) if delta.groups else state.groups,
        upstreams=(_replaced(state.upstreams, delta.upstreams, lambda u: u.name) if delta.upstreams
                   else state.upstreams),
        issuers=_replaced(state.issuers, delta.issuers, lambda i: i.name) if delta.issuers else state.issuers,
        _by_id=by_id,  # shared when unchanged: never mutated
    )
