"""How polling each upstream goes, and the leases that let one process at a time poll it.

Not catalog content: health changes on every poll, so it has no revision and no change-feed entry. It
has its own small protocol (`HealthStore`), owned here by the code that uses it; `store/` implements it
beside the catalog's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from modeldex.catalog.repository import CatalogStore
from modeldex.catalog.upstreams import Upstream


@dataclass(frozen=True)
class UpstreamHealth:
    """How polling an upstream went."""

    last_attempt_at: float | None = None
    last_success_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    latency_ms: float | None = None
    model_count: int = 0
    failing_since: float | None = None
    shadowed: tuple[dict[str, str], ...] = field(default_factory=tuple)
    next_poll_at: float | None = None
    polling_by: str | None = None  # the process holding the poll lease, while one does
    # The last polls, oldest first: (at, latency in ms or None, succeeded). Not in document(): the console's.
    latency_history: tuple[tuple[float, float | None, bool], ...] = field(default_factory=tuple, compare=False)

    def document(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "last_attempt_at": self.last_attempt_at,
            "last_success_at": self.last_success_at,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "latency_ms": self.latency_ms,
            "model_count": self.model_count,
            "failing_since": self.failing_since,
            "shadowed": list(self.shadowed),
            "next_poll_at": self.next_poll_at,
            "polling_by": self.polling_by,
        }

    @property
    def status(self) -> str:
        """`never` polled, `ok`, or `failing` (its models are then served stale)."""
        if self.last_attempt_at is None:
            return "never"
        return "failing" if self.failing_since is not None else "ok"


class HealthStore(Protocol):
    """Where health and poll leases are kept, shared by every worker and replica."""

    def upstream_health(self, now: float) -> dict[str, UpstreamHealth]:
        """How polling went, per upstream name (`polling_by` set while a lease is held at `now`)."""
        ...

    def due_upstreams(self, now: float) -> list[str]:
        """Names of upstreams due for a poll whose lease nobody holds."""
        ...

    def claim_upstream(self, name: str, owner: str, now: float, lease_s: float, force: bool = False) -> bool:
        """Take the poll lease of `name` for `lease_s` seconds if it is free (and due, unless `force`);
        returns whether this caller got it. At most one holder at a time across processes."""
        ...

    def finish_upstream(self, name: str, owner: str, health: UpstreamHealth, next_poll_at: float,
                        credential: str | None = None) -> None:
        """Record the health after a poll (and the fingerprint of the credential it sent, if given) and
        release the lease held by `owner`."""
        ...

    def upstream_credentials(self) -> dict[str, str | None]:
        """The credential fingerprint each upstream's last poll recorded, by name (None: none recorded)."""
        ...

    def poll_at_once(self, names: Iterable[str]) -> None:
        """Make these upstreams due now."""
        ...


class DiscoveryStore(CatalogStore, HealthStore, Protocol):
    """What polling needs: the catalog, and the health and leases beside it."""


def with_health(document: dict[str, Any], revision: int, health: UpstreamHealth | None) -> dict[str, Any]:
    """An upstream as the admin API and the CLI show it: its settings, revision and health."""
    return {**document, "revision": revision, "health": (health or UpstreamHealth()).document()}


def upstream_reports(upstreams: Iterable[tuple[Upstream, int]], health_store: HealthStore,
                     now: float) -> list[dict[str, Any]]:
    """Every upstream with its revision and health, by name: what `upstreams list` and the admin API show."""
    health = health_store.upstream_health(now)
    return [with_health(upstream.document(), revision, health.get(upstream.name))
            for upstream, revision in sorted(upstreams, key=lambda pair: pair[0].name)]
