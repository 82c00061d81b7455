"""Keeping storage bounded: each server worker compacts the change feed and revoked keys (catalog/
retention.py) once at start and then every `interval` seconds, on a thread of its own, off the request
path. Workers and replicas doing it at once is harmless: each deletes what is past the same cut-off."""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from modeldex.catalog.errors import StoreError
from modeldex.catalog.retention import Compacted, Retention

log = logging.getLogger("modeldex.compaction")
INTERVAL_S = 600.0


class Compactable(Protocol):
    def compact(self, retention: Retention, now: float) -> Compacted: ...


class Compactor:
    def __init__(self, store: Compactable, retention: Retention, interval: float = INTERVAL_S) -> None:
        self._store = store
        self._retention = retention
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="modeldex-compaction", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def compact_now(self) -> Compacted | None:
        try:
            compacted = self._store.compact(self._retention, time.time())
        except StoreError as exc:  # the database may be away: the next round tries again
            log.warning("compacting the change feed failed: %s", exc)
            return None
        except Exception:
            log.exception("compacting the change feed failed")
            return None
        if compacted.changes or compacted.revoked_keys:
            log.info("compacted storage (retention %s): removed %d change-feed entries and %d revoked keys",
                     self._retention, compacted.changes, compacted.revoked_keys)
        return compacted

    def _run(self) -> None:
        while True:
            self.compact_now()
            if self._stop.wait(self._interval):
                return

    def stop(self) -> None:
        self._stop.set()
