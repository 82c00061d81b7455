"""How each upstream has been answering inference requests, in this worker: the choice of route skips an
upstream that just failed, for a while that grows with repeated failures (or what its `retry-after`
said), and tries it again after. Kept in memory: a request never waits on a database write for it."""

from __future__ import annotations

import time
from dataclasses import dataclass

from modeldex.ops import metrics

BASE_COOLDOWN_S = 1.0
MAX_COOLDOWN_S = 30.0
MAX_RETRY_AFTER_S = 300.0


@dataclass(slots=True)
class _State:
    failures: int = 0  # in a row
    down_until: float = 0.0
    last_error: str | None = None


class RouteHealth:
    def __init__(self) -> None:
        self._states: dict[str, _State] = {}

    def healthy(self, upstream: str, now: float | None = None) -> bool:
        state = self._states.get(upstream)
        return state is None or state.down_until <= (time.monotonic() if now is None else now)

    def succeeded(self, upstream: str) -> None:
        state = self._states.get(upstream)
        if state is not None and state.failures:
            state.failures, state.down_until, state.last_error = 0, 0.0, None
            metrics.gateway_upstream_up(upstream, True)

    def failed(self, upstream: str, error: str, retry_after: float | None = None) -> None:
        """Skip `upstream` for `retry-after` seconds when it said so, else 1, 2, 4, ... up to 30 s."""
        state = self._states.setdefault(upstream, _State())
        state.failures += 1
        pause = (min(retry_after, MAX_RETRY_AFTER_S) if retry_after is not None
                 else min(BASE_COOLDOWN_S * 2 ** (state.failures - 1), MAX_COOLDOWN_S))
        state.down_until = time.monotonic() + pause
        state.last_error = error
        metrics.gateway_upstream_up(upstream, False)

    def report(self) -> dict[str, dict[str, object]]:
        now = time.monotonic()
        return {name: {"failures": s.failures, "healthy": s.down_until <= now, "last_error": s.last_error}
                for name, s in self._states.items()}
