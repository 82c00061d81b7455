"""One poll of one upstream: fetch, then apply the answer (or the failure) to the catalog in one write unit,
then record the upstream's health.

The rules (see `catalog/upstreams.py`): operator-defined models are never touched, the first upstream to
list an id keeps it, and a discovered model is removed once its upstream has not confirmed it for the
grace period, whether because the upstream fails or because it answers without that model. Until then
it is served as before, marked stale. Every change is in the change feed, by `upstream:NAME`.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from modeldex.catalog.entities import Alias, Model
from modeldex.catalog.errors import Conflict, NotFound
from modeldex.catalog.upstreams import Upstream
from modeldex.discovery.answer import InvalidAnswer, to_models
from modeldex.discovery.credentials import current_key, fingerprint
from modeldex.discovery.fetch import UpstreamError, api_key_from, clean, fetch_models, lease_seconds
from modeldex.discovery.health import DiscoveryStore, UpstreamHealth

if TYPE_CHECKING:
    from modeldex.catalog.repository import CatalogWriter

MAX_SHADOWED_SHOWN = 50
log = logging.getLogger("modeldex.discovery")


def new_owner() -> str:
    """Who holds a poll lease: this process, recognisably, and unlike any other."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class Changes:
    """What one poll did to the catalog."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # newly marked stale
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # past the grace period, but aliases point to them
    shadowed: list[dict[str, str]] = field(default_factory=list)
    model_count: int = 0
    next_expiry: float | None = None  # when the next stale model's grace period ends
    version: int | None = None  # the catalog version the changes made, if any


def apply_answer(writer: CatalogWriter, upstream: Upstream, discovered: list[Model] | None, now: float
                 ) -> Changes:
    """Make the catalog reflect one poll: `discovered` is what the upstream yields, None if it failed."""
    changes = Changes()
    models = {m.id: m for m in writer.all(Model)}
    aliases = {a.id: a.target for a in writer.all(Alias)}
    targets = set(aliases.values())
    confirmed: set[str] = set()
    for model in discovered or ():
        current = models.get(model.id)
        if model.id in aliases:
            changes.shadowed.append({"id": model.id, "by": "alias"})
            continue
        if current is not None and current.source != upstream.name:
            by = "operator" if current.source is None else f"upstream {current.source}"
            changes.shadowed.append({"id": model.id, "by": by})
            continue
        confirmed.add(model.id)
        if current is None:
            writer.create(model)
            changes.added.append(model.id)
            continue
        wanted = model.model_copy(update={"created": current.created})  # first seen is kept: vLLM restamps
        if wanted != current:
            writer.update(wanted)
            changes.updated.append(model.id)
    for model in models.values():
        if model.source != upstream.name or model.id in confirmed:
            continue
        since = model.stale_since if model.stale_since is not None else now
        if now - since >= upstream.grace:
            if model.id in targets:
                changes.kept.append(model.id)
                continue
            writer.delete(Model, model.id)
            changes.removed.append(model.id)
        else:
            if model.stale_since is None:
                writer.update(model.model_copy(update={"stale_since": now}))
                changes.stale.append(model.id)
            expiry = since + upstream.grace
            changes.next_expiry = expiry if changes.next_expiry is None else min(changes.next_expiry, expiry)
    before = sum(1 for m in models.values() if m.source == upstream.name)
    changes.model_count = before + len(changes.added) - len(changes.removed)
    if changes.added or changes.updated or changes.stale or changes.removed:
        changes.version = writer.version
    return changes


@dataclass(frozen=True)
class SyncResult:
    upstream: str
    ok: bool
    error: str | None
    latency_ms: float | None
    changes: Changes
    health: UpstreamHealth

    def document(self) -> dict[str, Any]:
        c = self.changes
        return {
            "upstream": self.upstream, "ok": self.ok, "error": self.error, "latency_ms": self.latency_ms,
            "model_count": c.model_count, "added": c.added, "updated": c.updated, "stale": c.stale,
            "removed": c.removed, "kept": c.kept, "shadowed": c.shadowed, "version": c.version,
            "health": self.health.document(),
        }


def poll_once(store: DiscoveryStore, upstream: Upstream, owner: str, environ: Mapping[str, str] = os.environ,
              recording: Callable[[], AbstractContextManager[bool]] = lambda: nullcontext(True)) -> SyncResult:
    """Poll `upstream` (the caller holds its lease), apply the outcome, record health, release the lease.

    The answer is recorded inside `recording()`, unless it yields False (a server stopping: the lease then
    expires, as when a worker dies mid-poll). The models and then the health and key fingerprint are two
    writes: a server that stopped between them kept the models and lost the fingerprint, so a restart with a
    rotated key did not poll at once; the poller waits for what is inside before it stops."""
    now = time.time()
    api_key: str | None = None
    discovered: list[Model] | None = None
    error: str | None = None
    latency_ms: float | None = None
    try:
        api_key = api_key_from(environ, upstream.api_key_env)
        fetched = fetch_models(upstream.base_url, api_key, upstream.timeout)
        latency_ms = round(fetched.latency_ms, 1)
        discovered = to_models(upstream, fetched.entries, now)
    except (UpstreamError, InvalidAnswer) as exc:
        error = clean(str(exc), api_key)
    except Exception as exc:  # a bug must still end in a recorded failure and a released lease
        log.exception("polling upstream %s failed unexpectedly", upstream.name)
        error = f"unexpected error while polling ({type(exc).__name__}); see the server log"
    with recording() as allowed:
        if not allowed:
            return SyncResult(upstream.name, False, "not recorded: the server is stopping", latency_ms,
                              Changes(), UpstreamHealth())
        return _record(store, upstream, owner, environ, now, discovered, error, latency_ms)


def _record(store: DiscoveryStore, upstream: Upstream, owner: str, environ: Mapping[str, str], now: float,
            discovered: list[Model] | None, error: str | None, latency_ms: float | None) -> SyncResult:
    previous = store.upstream_health(now).get(upstream.name, UpstreamHealth())
    changes = Changes(model_count=previous.model_count)
    health = previous
    try:
        with store.write(f"upstream:{upstream.name}") as writer:
            current = writer.get(Upstream, upstream.name)
            if current is None or current != upstream:
                # Edited or removed meanwhile: this answer is for settings that no longer hold. Record
                # nothing; an edited upstream is due again at once.
                return SyncResult(upstream.name, False, "the upstream was changed or removed during the poll",
                                  latency_ms, changes, health)
            changes = apply_answer(writer, upstream, discovered, now)
        next_poll = now + upstream.interval
        if changes.next_expiry is not None:  # be there when a stale model's grace period ends
            next_poll = min(next_poll, changes.next_expiry)
        health = replace(_health(previous, now, error, latency_ms, changes), next_poll_at=next_poll)
    finally:
        store.finish_upstream(upstream.name, owner, health, health.next_poll_at or now + upstream.interval,
                              credential=fingerprint(current_key(environ, upstream.api_key_env)))
    return SyncResult(upstream.name, error is None, error, latency_ms, changes, health)


def _health(previous: UpstreamHealth, now: float, error: str | None, latency_ms: float | None,
            changes: Changes) -> UpstreamHealth:
    ok = error is None
    return UpstreamHealth(
        last_attempt_at=now,
        last_success_at=now if ok else previous.last_success_at,
        last_error=error if not ok else previous.last_error,
        last_error_at=now if not ok else previous.last_error_at,
        latency_ms=latency_ms if latency_ms is not None else previous.latency_ms,
        model_count=changes.model_count,
        failing_since=None if ok else (previous.failing_since or now),
        shadowed=tuple(changes.shadowed[:MAX_SHADOWED_SHOWN]) if ok else previous.shadowed,
    )


def sync_now(store: DiscoveryStore, name: str, owner: str | None = None, wait_s: float | None = None
             ) -> SyncResult:
    """Poll `name` at once, whether due or not. If another process is polling it, wait for that poll to end
    (a lease at most), then poll again: the answer reflects the upstream as it is now."""
    upstream = store.get(Upstream, name)
    if upstream is None:
        raise NotFound("upstream", name)
    if upstream.routing_only:  # polling it would report a model list it never had
        raise Conflict(f"upstream {name!r} is routing only: it is never polled (its models are the ones "
                       "routed to it)")
    owner = owner or new_owner()
    lease = lease_seconds(upstream.timeout)
    deadline = time.monotonic() + (lease if wait_s is None else wait_s)
    while not store.claim_upstream(name, owner, time.time(), lease, force=True):
        if time.monotonic() > deadline:
            raise Conflict(f"upstream {name!r} is being polled by another process; try again later")
        time.sleep(0.1)
    return poll_once(store, upstream, owner)
