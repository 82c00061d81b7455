"""What a server's workers share through files in its per-run directory, and whether the worker that wrote
one still runs: what a worker leaves behind (metric files, inference health, traffic) is read only while it
is alive."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

SHARE_INTERVAL_S = 1.0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


class WorkerShare:
    """One worker's figures (`snapshot()`, JSON) in `directory` as PREFIXPID.json, written by a daemon thread
    at most every SHARE_INTERVAL_S and only when `changes()` moved; `others()` reads the other live
    workers' files back."""

    def __init__(self, directory: str | os.PathLike[str], prefix: str, snapshot: Callable[[], Any],
                 changes: Callable[[], int], thread_name: str, worker: int | None = None) -> None:
        self.directory = Path(directory)
        self.prefix = prefix
        # Named by the worker's process id: a file whose process is gone is left out of the figures.
        self.path = self.directory / f"{prefix}{os.getpid() if worker is None else worker}.json"
        self._snapshot, self._changes, self._thread_name = snapshot, changes, thread_name
        self._written = 0
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name=self._thread_name, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.path.unlink()

    def _run(self) -> None:
        while not self._stop.wait(SHARE_INTERVAL_S):
            self.write()

    def write(self) -> None:
        changes = self._changes()
        if changes == self._written:
            return
        temporary = self.path.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps(self._snapshot()))
            os.replace(temporary, self.path)  # readers see the old file or the new one, never half of one
            self._written = changes
        except OSError:
            pass  # the directory went away (the server stopping): the next round tries again

    def others(self) -> list[Any]:
        """The other live workers' last written figures (a replaced worker's went with it)."""
        found = []
        for path in self.directory.glob(f"{self.prefix}*.json"):
            pid = path.stem.removeprefix(self.prefix)
            if path == self.path or not pid.isdigit() or not alive(int(pid)):
                continue
            with contextlib.suppress(OSError, ValueError):
                found.append(json.loads(path.read_text()))
        return found
