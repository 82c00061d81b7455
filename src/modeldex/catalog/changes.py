"""The change feed: every committed change, at the catalog version it produced, with who made it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_VERSION = 2**63 - 1  # a BIGINT, in SQLite and PostgreSQL alike


@dataclass(frozen=True, slots=True)
class Change:
    version: int
    at: float
    actor: str
    entity: str  # "model", "alias", "group" or "key"
    id: str
    op: str  # "create", "update" or "delete"
    before: dict[str, Any] | None
    after: dict[str, Any] | None

    def document(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "at": self.at,
            "actor": self.actor,
            "entity": self.entity,
            "id": self.id,
            "op": self.op,
            "before": self.before,
            "after": self.after,
        }


@dataclass(frozen=True, slots=True)
class ChangePage:
    """A page of the feed for a reader that follows it with `since` (`Catalog.change_page`): whole
    versions, up to `version`, the catalog version read before the page. Nothing at a version up to
    the last entry's (or up to `version`, when `has_more` is false) is missing from this page and the
    ones before it."""

    entries: list[Change]
    version: int
    has_more: bool
