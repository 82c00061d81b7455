"""LiveCatalog: an in-memory view of the catalog, rebuilt when the stored catalog changes.

Requests are answered from `current` without touching the database. The store wakes the refresher as
soon as another process commits (PostgreSQL's LISTEN/NOTIFY); a periodic check of the catalog version
(one tiny query) is the safety net, so a missed notification, or a database without notifications
(SQLite), still shows within `interval` seconds. The view is rebuilt only when the version moved, or when
the view says it expires (a model's shutdown time passed). If the store is unreachable the last view
keeps being served, and `ready` says why not.

A moved version is caught up with incrementally where it can be: the store reads only the entities the
change feed names (`load_delta`), they are folded into the previous state, and a view that knows how
(`IncrementalView`) derives itself from the previous one. A full reload remains the fallback: at
startup, when a shutdown time passed, when the gap is large or the feed cannot vouch for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, runtime_checkable

from modeldex.catalog.collector import collector_paused
from modeldex.catalog.errors import StoreError, StoreUnavailable
from modeldex.catalog.incremental import CatalogDelta, apply_delta
from modeldex.catalog.state import CatalogState

if TYPE_CHECKING:
    from modeldex.catalog.repository import CatalogStore

View = TypeVar("View")
log = logging.getLogger("modeldex.live")
# Catch up change by change up to this many feed entries (or a tenth of the catalog, if more); past
# that a full reload costs about as much.
MIN_DELTA_CHANGES = 1000


@runtime_checkable
class IncrementalView(Protocol):
    """A view that can derive the next version's view from itself and what changed."""

    def updated(self, state: CatalogState, delta: CatalogDelta) -> Any: ...


class LiveCatalog(Generic[View]):
    def __init__(
        self, store: CatalogStore, build: Callable[[CatalogState], View], interval: float = 0.2,
        on_check: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._on_check = on_check
        self._build = build
        self._interval = interval
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] = lambda: None
        self.version = -1
        self.confirmed_at = time.monotonic()  # when the store last confirmed `current` is up to date
        self.last_error: str | None = None
        self._state: CatalogState | None = None
        self.current: View = self._load()

    @property
    def ready(self) -> bool:
        """Loaded, and the store answered the last check."""
        return self.last_error is None

    def _load(self) -> View:
        with collector_paused():
            state = self._store.load_state()
            view = self._build(state)
        self._state = state
        self.version = state.version
        return view

    def _catch_up(self) -> View | None:
        """The view at the stored version, from the current one and the changes since; None when only a
        full load will do."""
        state = self._state
        if state is None:
            return None
        delta = self._store.load_delta(self.version, max(MIN_DELTA_CHANGES, len(state.models) // 10))
        if delta is None:
            return None
        try:
            new_state = apply_delta(state, delta)
            current = self.current
            view = current.updated(new_state, delta) if isinstance(current, IncrementalView) else self._build(new_state)
        except Exception:  # a bug here must not stop serving: the full load is always right
            log.exception("catching up from version %d failed; reloading the catalog", self.version)
            return None
        self._state = new_state
        self.version = new_state.version
        return view

    def refresh(self) -> bool:
        """Rebuild the view if the stored version moved, or if it said it expires. Returns whether it did."""
        with self._lock:
            expires_at = getattr(self.current, "expires_at", None)
            expired = expires_at is not None and time.time() >= expires_at
            if not expired and self._store.current_version() == self.version:
                self.confirmed_at = time.monotonic()
                return False
            caught_up = None if expired else self._catch_up()
            self.current = caught_up if caught_up is not None else self._load()
            self.confirmed_at = time.monotonic()
            return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="modeldex-refresh", daemon=True)
        self._thread.start()
        self._unsubscribe = self._store.subscribe(self._wake.set)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._unsubscribe()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.refresh()
                if self.last_error is not None:
                    log.warning("catalog store reachable again; serving version %d", self.version)
                self.last_error = None
            except Exception as exc:  # keep serving the last view whatever the store does
                # /readyz shows last_error to anyone: a store's own errors are written for that; anything else
                # (a table gone from under the server: the driver's message and its SQL) goes to the log only,
                # and so does the driver's message an unreachable store quotes (the database's host, address,
                # port and user: `connection to server at "db.internal" (10.0.0.5), port 5432 failed: ...`).
                if isinstance(exc, StoreUnavailable):
                    said = "the catalog database is unreachable (see the server's log)"
                elif isinstance(exc, StoreError) and str(exc):
                    said = str(exc)
                else:
                    said = f"the catalog could not be read ({type(exc).__name__}; see the server's log)"
                if self.last_error is None:
                    log.warning("catalog refresh failed, serving version %d: %s", self.version, exc,
                                exc_info=not isinstance(exc, StoreError))
                self.last_error = said
            if self._on_check is not None:
                self._on_check()
