"""The background poller every server worker runs.

Each tick it asks the store which upstreams are due and not being polled (one cheap read), and claims a
lease on each before polling it. The lease is one conditional UPDATE, so however many workers and
replicas share the database, each upstream is polled by one of them at a time, once per interval. A
worker that dies mid-poll leaves a lease that expires (`fetch.lease_seconds`), and another takes over.
Polls run on a few threads of their own: serving never waits on an upstream, and a slow upstream does
not hold up the others.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from modeldex.catalog.errors import StoreError
from modeldex.catalog.upstreams import Upstream
from modeldex.discovery import credentials
from modeldex.discovery.fetch import lease_seconds
from modeldex.discovery.sync import new_owner, poll_once

if TYPE_CHECKING:
    from modeldex.discovery.health import DiscoveryStore

TICK_S = 1.0
RECORD_WAIT_S = 5.0  # the most a stopping worker waits for a poll to finish writing its answer
MAX_PARALLEL_POLLS = 4
log = logging.getLogger("modeldex.discovery")


class Poller:
    def __init__(self, store: DiscoveryStore, on_change: Callable[[], object] | None = None,
                 tick: float = TICK_S) -> None:
        self._store = store
        self._on_change = on_change
        self._tick = tick
        self.owner = new_owner()
        self._stop = threading.Event()
        self._running: set[str] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="modeldex-poller", daemon=True)
        self._store_trouble = False
        self._recorders = 0  # polls writing their answer now
        self._recorded = threading.Condition()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        # Polls in flight are daemon threads: a stalled upstream never holds up shutdown, and the lease
        # such a poll holds expires by itself. A poll writing its answer is waited for (milliseconds), so that
        # its models, health and key fingerprint are all recorded; one that has not begun to write never will.
        self._stop.set()
        self._thread.join(timeout=5)
        with self._recorded:
            self._recorded.wait_for(lambda: self._recorders == 0, timeout=RECORD_WAIT_S)

    @contextlib.contextmanager
    def _recording(self) -> Iterator[bool]:
        """Around a poll's writes: whether it may write (not once stopping), and stop() waits for it."""
        with self._recorded:
            allowed = not self._stop.is_set()
            if allowed:
                self._recorders += 1
        try:
            yield allowed
        finally:
            if allowed:
                with self._recorded:
                    self._recorders -= 1
                    self._recorded.notify_all()

    def _run(self) -> None:
        try:
            self.poll_changed_credentials()
        except Exception as exc:  # the store may be away: the upstreams are polled when due, as before
            log.warning("could not compare upstream credentials with their last poll's: %s", exc)
        while not self._stop.wait(self._tick):
            try:
                self.tick()
                self._store_trouble = False
            except Exception as exc:  # the store may be away: try again next tick
                if not self._store_trouble:
                    log.warning("upstream polling paused: %s", exc)
                self._store_trouble = True

    def poll_changed_credentials(self, environ: Mapping[str, str] = os.environ) -> list[str]:
        """At start: make due now every polled upstream whose key in this process's environment is not the
        one its last poll sent (a key rotated, then the server restarted), rather than at its interval."""
        recorded = self._store.upstream_credentials()
        changed = [upstream.name for upstream in self._store.all(Upstream)
                   if not upstream.routing_only and upstream.name in recorded and recorded[upstream.name] is not None
                   and not credentials.matches(recorded[upstream.name],
                                               credentials.current_key(environ, upstream.api_key_env))]
        if changed:
            self._store.poll_at_once(changed)
            log.info("upstream credentials changed since the last poll: polling %s now", ", ".join(changed))
        return changed

    def tick(self) -> None:
        """Claim and start a poll of every due upstream that no one is polling."""
        now = time.time()
        for name in self._store.due_upstreams(now):
            with self._lock:
                if name in self._running or len(self._running) >= MAX_PARALLEL_POLLS:
                    continue
            upstream = self._store.get(Upstream, name)
            if upstream is None:
                continue
            if not self._store.claim_upstream(name, self.owner, time.time(), lease_seconds(upstream.timeout)):
                continue  # another worker or replica got it first
            with self._lock:
                self._running.add(name)
            threading.Thread(target=self._poll, args=(upstream,), name=f"modeldex-poll-{name}",
                             daemon=True).start()

    def _poll(self, upstream: Upstream) -> None:
        try:
            result = poll_once(self._store, upstream, self.owner, recording=self._recording)
            if self._stop.is_set() and not result.ok:
                return
            changes = result.changes
            if not result.ok:  # a warning when it starts failing, not at every poll while it does
                first = result.health.failing_since == result.health.last_attempt_at
                log.log(logging.WARNING if first else logging.DEBUG, "upstream %s: %s; %d models kept, stale",
                        upstream.name, result.error, changes.model_count)
            if changes.added or changes.removed:
                log.info("upstream %s: %d models added, %d removed; %d in the catalog", upstream.name,
                         len(changes.added), len(changes.removed), changes.model_count)
            if changes.version is not None and self._on_change is not None:
                with contextlib.suppress(Exception):  # the refresher catches up anyway
                    self._on_change()  # this worker serves the change at once; others see the version move
        except StoreError as exc:  # the database is away: the lease expires, and a later tick tries again
            log.warning("polling upstream %s could not be recorded: %s", upstream.name, exc)
        except Exception:
            log.exception("polling upstream %s failed", upstream.name)
        finally:
            with self._lock:
                self._running.discard(upstream.name)
