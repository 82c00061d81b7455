"""granian's supervisor, with a worker's liveness read from its exit pipe rather than from `waitpid`.

granian watches each worker from a thread that blocks in `waitpid`, and on shutdown the main thread joins
the same worker and asks `is_alive()`, which calls `waitpid` too. When the watcher thread reaps the worker
first, the main thread's `waitpid` fails (ECHILD), multiprocessing reads that as "still running", and
granian logged "Killing worker-1 after it refused to gracefully stop" and sent SIGKILL to a pid that had
already exited (and could have been reused): 1 stop in 15, 2 in 25 here (measured with a diagnostic on
`waitpid`: every such stop had the ECHILD). A worker's sentinel, the pipe it holds open until it exits,
says whether it has exited whichever thread reaped it.
"""

from __future__ import annotations

from multiprocessing.connection import wait
from typing import Any


def has_exited(process: Any) -> bool:
    """Whether a started multiprocessing.Process has exited (its sentinel pipe is closed), without waitpid."""
    return bool(wait([process.sentinel], 0))


class ReapSafeWorkers:
    """Mixed in before granian's server class: its workers' `is_alive` asks the sentinel."""

    def _spawn_worker(self, *args: Any, **kwargs: Any) -> Any:
        worker = super()._spawn_worker(*args, **kwargs)  # type: ignore[misc]
        worker.is_alive = lambda: worker.inner.pid is not None and not has_exited(worker.inner)
        return worker

