"""Stop signals that reach a server worker while it starts are kept, not lost.

granian installs the worker's SIGTERM/SIGINT handlers on its event loop before the app loads its catalog,
but uvloop only delivers a signal once the loop runs: one that arrived during the ~100 ms start was
dropped, and the supervisor then waited --shutdown-timeout (30 s) before killing the worker (measured).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def stop_signals_kept(loop: Any) -> Iterator[None]:
    """While the block runs, note stop signals; then raise them again once `loop` runs (and delivers them)."""
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: received.append(signum)) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in dict.fromkeys(received):
            loop.call_soon(os.kill, os.getpid(), signum)
