"""Which upstreams serve a model, worked out once per catalog version, and the order to try them in.

A model's own routes win; a discovered model goes to the upstream that listed it, under the upstream's own
id (the discovery prefix removed); a seeded model to its built-in upstream (`catalog/seed.py`); an alias
routes as its target. An upstream whose key variable is not set
in this process is not usable, and says so: that is what the 503 names.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass

from modeldex.catalog.entities import Alias, Model
from modeldex.catalog.upstreams import Upstream, header_safe_key, model_routes
from modeldex.gateway.health import RouteHealth


@dataclass(frozen=True, slots=True)
class Target:
    """One way to serve a model: an upstream, its base URL for the protocol, and its id for the model."""

    upstream: str
    base_url: str
    upstream_model: str
    weight: int
    api_key: str | None  # read from the upstream's variable when the table was made


class NoRoute(Exception):
    """The model is served by no usable upstream; `message` says what is missing, `code` what kind."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class RoutingTable:
    """Routes by model id, for one catalog version (models, aliases and upstreams as served)."""

    def __init__(self, models: Mapping[str, Model], aliases: Mapping[str, Alias],
                 upstreams: Mapping[str, Upstream], builtin_upstreams: Mapping[str, Upstream] | None = None,
                 builtin_models: Mapping[str, str] | None = None) -> None:
        self._models = models
        self._aliases = aliases
        # Stored upstreams replace built-in ones of the same name.
        self._upstreams = {**(builtin_upstreams or {}), **upstreams}
        self._builtin_models = builtin_models or {}  # seeded model id -> the built-in upstream serving it
        self._memo: dict[tuple[str, str], list[Target] | NoRoute] = {}

    def targets(self, model_id: str, protocol: str) -> list[Target]:
        """Every usable target of `model_id` (a model or alias id) in `protocol`; NoRoute when none is."""
        key = (model_id, protocol)
        found = self._memo.get(key)
        if found is None:
            try:
                found = self._resolve(model_id, protocol)
            except NoRoute as exc:
                found = exc
            if len(self._memo) < 100_000:
                self._memo[key] = found
        if isinstance(found, NoRoute):
            raise found
        return found

    def _resolve(self, model_id: str, protocol: str) -> list[Target]:
        alias = self._aliases.get(model_id)
        model = self._models.get(alias.target if alias is not None else model_id)
        if model is None:
            raise NoRoute(f"The model `{model_id}` has no route: it is not in the catalog.", "no_route")
        wanted = [(name, upstream_model, weight or 1)
                  for name, upstream_model, weight in model_routes(model, self._upstreams)]
        if not wanted and model.id in self._builtin_models:
            wanted = [(self._builtin_models[model.id], model.id, 1)]
        if not wanted:
            raise NoRoute(f"The model `{model_id}` has no route to an upstream: an operator can add one with "
                          f"`modeldex routes add {model.id} UPSTREAM`.", "no_route")
        usable: list[Target] = []
        problems: list[str] = []
        codes: set[str] = set()
        for name, upstream_model, weight in wanted:
            upstream = self._upstreams.get(name)
            if upstream is None:
                problems.append(f"upstream `{name}` does not exist")
                codes.add("no_route")
                continue
            base_url = upstream.endpoint(protocol)
            if base_url is None:
                problems.append(f"upstream `{name}` does not speak the {protocol} API "
                                f"(`modeldex upstreams update {name} --protocol {protocol}[=URL]`)")
                codes.add("protocol_not_served")
                continue
            api_key = None
            if upstream.api_key_env is not None:
                try:  # stripped as discovery strips it: a key ending in a newline made every request a 500
                    api_key = header_safe_key(os.environ.get(upstream.api_key_env))
                except ValueError as exc:
                    problems.append(f"upstream `{name}`'s {upstream.api_key_env} holds {exc}")
                    codes.add("upstream_key_invalid")
                    continue
                if api_key is None:
                    problems.append(f"upstream `{name}` needs its API key: set {upstream.api_key_env} in the "
                                    "server's environment")
                    codes.add("upstream_key_missing")
                    continue
            usable.append(Target(name, base_url, upstream_model, weight, api_key))
        if not usable:
            code = codes.pop() if len(codes) == 1 else "no_usable_route"
            raise NoRoute(f"The model `{model_id}` cannot be served right now: {'; '.join(problems)}.", code)
        return usable


def attempt_order(targets: list[Target], health: RouteHealth, chooser: random.Random) -> list[Target]:
    """Healthy targets first, in a weighted random order (each next pick by weight among the rest); then
    the resting ones, so a request still tries them when nothing else is left."""
    if len(targets) == 1:
        return targets
    healthy = [t for t in targets if health.healthy(t.upstream)]
    resting = [t for t in targets if not health.healthy(t.upstream)]
    ordered: list[Target] = []
    while healthy:
        pick = chooser.choices(range(len(healthy)), weights=[t.weight for t in healthy])[0]
        ordered.append(healthy.pop(pick))
    return ordered + resting
