"""How each upstream has been answering inference requests: the choice of route skips an upstream that
just failed, for a while that grows with repeated failures (or what its `retry-after` said), and tries it
again after. Kept in each worker's memory: a request never waits on a write for it.

The admin API shows it beside discovery's health (`health.inference`), added up over the server's workers:
each worker writes its figures to a small file once a second at most, from a thread (`SharedHealth`), and
the worker answering the admin request merges the others' files with its own live figures.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from modeldex.ops import metrics
from modeldex.ops.processes import WorkerShare

BASE_COOLDOWN_S = 1.0
MAX_COOLDOWN_S = 30.0
MAX_RETRY_AFTER_S = 300.0
_FILE_PREFIX = "inference-health-"


@dataclass(slots=True)
class _State:
    failures: int = 0  # in a row
    down_until: float = 0.0  # time.monotonic()
    last_error: str | None = None
    last_error_at: float | None = None  # time.time(), as discovery's health
    last_success_at: float | None = None
    successes: int = 0  # attempts the upstream answered (any status but 429 and 5xx)
    errors: int = 0  # connect errors, timeouts before the first byte, 429s and 5xx


class RouteHealth:
    def __init__(self) -> None:
        self._states: dict[str, _State] = {}
        self.changes = 0  # counts every outcome: SharedHealth writes only when it moved

    def healthy(self, upstream: str, now: float | None = None) -> bool:
        state = self._states.get(upstream)
        return state is None or state.down_until <= (time.monotonic() if now is None else now)

    def succeeded(self, upstream: str) -> None:
        state = self._states.get(upstream)
        if state is None:
            state = self._states[upstream] = _State()
        state.successes += 1
        state.last_success_at = time.time()
        self.changes += 1
        if state.failures:
            state.failures, state.down_until, state.last_error = 0, 0.0, None
            metrics.gateway_upstream_up(upstream, True)

    def failed(self, upstream: str, error: str, retry_after: float | None = None) -> None:
        """Skip `upstream` for `retry-after` seconds when it said so, else 1, 2, 4, ... up to 30 s."""
        state = self._states.setdefault(upstream, _State())
        state.failures += 1
        state.errors += 1
        pause = (min(retry_after, MAX_RETRY_AFTER_S) if retry_after is not None
                 else min(BASE_COOLDOWN_S * 2 ** (state.failures - 1), MAX_COOLDOWN_S))
        state.down_until = time.monotonic() + pause
        state.last_error = error
        state.last_error_at = time.time()
        self.changes += 1
        metrics.gateway_upstream_up(upstream, False)

    def report(self) -> dict[str, dict[str, object]]:
        now = time.monotonic()
        return {name: {"healthy": s.down_until <= now, "failures": s.failures, "last_error": s.last_error,
                       "last_error_at": s.last_error_at, "last_success_at": s.last_success_at,
                       "successes": s.successes, "errors": s.errors, "workers": 1}
                for name, s in list(self._states.items())}


def idle_report() -> dict[str, object]:
    """An upstream no inference request has gone to yet."""
    return {"healthy": True, "failures": 0, "last_error": None, "last_error_at": None, "last_success_at": None,
            "successes": 0, "errors": 0, "workers": 0}


def merge(reports: list[dict[str, dict[str, object]]]) -> dict[str, dict[str, object]]:
    """Several workers' reports as one: healthy unless a worker rests the upstream, the most failures in a
    row any worker saw, the latest error and success, counts added up."""
    merged: dict[str, dict[str, object]] = {}
    for report in reports:
        for name, state in report.items():
            into = merged.get(name)
            if into is None:
                merged[name] = dict(state)
                continue
            into["healthy"] = bool(into["healthy"]) and bool(state["healthy"])
            into["failures"] = max(_int(into["failures"]), _int(state["failures"]))
            if (_float(state["last_error_at"]) or 0) > (_float(into["last_error_at"]) or 0):
                into["last_error"], into["last_error_at"] = state["last_error"], state["last_error_at"]
            into["last_success_at"] = max(_float(into["last_success_at"]) or 0, _float(state["last_success_at"]) or 0) or None
            for count in ("successes", "errors", "workers"):
                into[count] = _int(into[count]) + _int(state[count])
    return merged


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


class SharedHealth(WorkerShare):
    """This worker's RouteHealth, shared with the others through the server's per-run directory."""

    def __init__(self, health: RouteHealth, directory: str | os.PathLike[str], worker: int | None = None) -> None:
        super().__init__(directory, _FILE_PREFIX, health.report, lambda: health.changes,
                         "modeldex-inference-health", worker)
        self.health = health

    def report(self) -> dict[str, dict[str, object]]:
        """Every live worker's figures merged: this one's as they are now, the others' as last written."""
        return merge([self.health.report(), *self.others()])
