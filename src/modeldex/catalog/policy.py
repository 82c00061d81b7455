"""Who sees what: a key's access policy, and the one function that decides visibility.

Listing, retrieving and `keys explain` all call `Visibility.decide`, so they cannot disagree.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import translate
from typing import Any

from pydantic import model_validator

from modeldex.catalog.entities import Alias, Entity, Group, Model, Name, Pattern


class AccessPolicy(Entity):
    """All models (`{"all": true}`, the default), or those matched by groups and/or id patterns."""

    all: bool = True
    groups: tuple[Name, ...] = ()
    patterns: tuple[Pattern, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _all_unless_restricted(cls, data: Any) -> Any:
        if isinstance(data, dict) and "all" not in data and (data.get("groups") or data.get("patterns")):
            return {**data, "all": False}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> AccessPolicy:
        if self.all and (self.groups or self.patterns):
            raise ValueError("a policy is either all models or a list of groups and/or patterns, not both")
        if not self.all and not (self.groups or self.patterns):
            raise ValueError("a restricted policy needs at least one group or pattern")
        return self

    def document(self) -> dict[str, Any]:
        if self.all:
            return {"all": True}
        return {"groups": list(self.groups), "patterns": list(self.patterns)}


ALL_MODELS = AccessPolicy()


@dataclass(frozen=True, slots=True)
class Decision:
    visible: bool
    rule: str


@dataclass(frozen=True, slots=True)
class _Rule:
    description: str
    regex: re.Pattern[str]


def _is_glob(member: str) -> bool:
    return any(char in member for char in "*?[")


class Visibility:
    """A policy compiled against the catalog at one version.

    Group members that are plain ids (no `*`, `?` or `[`) are looked up in a dict, and only glob members
    and patterns are regexes tried in turn: a rule list of one regex per member made a 100,000-member
    group cost 1.8 s to compile at every view built and write served, and deciding a catalog of N
    models against it O(N x members) (measured).
    """

    def __init__(self, policy: AccessPolicy, models: Mapping[str, Model], aliases: Mapping[str, Alias],
                 groups: Mapping[str, Group], now: float) -> None:
        self.policy = policy
        self._models = models
        self._aliases = aliases
        self._now = now
        # Rules in policy order; the first that matches names the decision, as `keys explain` shows it.
        self._exact: dict[str, tuple[int, str]] = {}  # id -> (its rule's position, its group)
        self._globs: list[tuple[int, _Rule]] = []
        self._missing_groups: list[str] = []
        position = 0
        for name in policy.groups:
            group = groups.get(name)
            if group is None:
                self._missing_groups.append(name)
                continue
            for member in group.members:
                if _is_glob(member):
                    rule = _Rule(f"group {name!r} (member {member!r})", re.compile(translate(member)))
                    self._globs.append((position, rule))
                else:
                    self._exact.setdefault(member, (position, name))
                position += 1
        for pattern in policy.patterns:
            self._globs.append((position, _Rule(f"pattern {pattern!r}", re.compile(translate(pattern)))))
            position += 1

    def _policy_rule(self, model_id: str) -> Decision:
        if self.policy.all:
            return Decision(True, "the key's policy allows all models")
        exact = self._exact.get(model_id)
        for position, rule in self._globs:
            if exact is not None and position > exact[0]:
                break
            if rule.regex.match(model_id):
                return Decision(True, f"allowed by {rule.description}")
        if exact is not None:
            return Decision(True, f"allowed by group {exact[1]!r} (member {model_id!r})")
        missing = f" (missing groups: {', '.join(self._missing_groups)})" if self._missing_groups else ""
        return Decision(False, f"no group or pattern of the key's policy matches{missing}")

    def decide(self, model_id: str) -> Decision:
        """Whether a key with this policy sees `model_id` (a model or an alias), and which rule says so."""
        alias = self._aliases.get(model_id)
        if alias is not None:
            target = self.decide(alias.target)
            return Decision(target.visible, f"alias of {alias.target!r}: {target.rule}")
        model = self._models.get(model_id)
        if model is None:
            return Decision(False, "no such model")
        shutdown_at = model.shutdown_at()
        if shutdown_at is not None and shutdown_at <= self._now:
            return Decision(False, f"the model was shut down on {model.shutdown_date}")
        return self._policy_rule(model_id)
