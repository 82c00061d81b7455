"""A rate limit as operators write it ("600/m", "20/s", "100/10m", "off"): a domain value, checked where a
key or the server is configured, and counted by `ops/ratelimit.py`.

Bounds: 1 to MAX_REQUESTS requests per 1 second to MAX_PERIOD_S (a year). A zero period would divide by
zero on every request; past these bounds Redis refuses the bucket's expiry and token counts lose
precision (a double is exact to 2^53, and tokens are kept in thousandths).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

_LIMIT = re.compile(r"\s*(\d{1,30})\s*/\s*(\d{0,30})\s*(s|sec|second|m|min|minute|h|hour|d|day)\s*", re.IGNORECASE)
_PERIODS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600,
            "d": 86400, "day": 86400}
_OFF = ("", "0", "off", "none", "unlimited")
MAX_REQUESTS = 1_000_000_000
MAX_PERIOD_S = 366 * 86400


@dataclass(frozen=True, slots=True)
class Limit:
    """`requests` per `period` seconds."""

    requests: int
    period: float

    @property
    def rate(self) -> float:
        return self.requests / self.period

    def __str__(self) -> str:
        """The form parse_limit reads back: `600/m`, `100/10m`, `5/30s`."""
        for unit, seconds in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
            if self.period % seconds == 0:
                count = int(self.period // seconds)
                return f"{self.requests}/{'' if count == 1 else count}{unit}"
        return f"{self.requests}/{self.period}s"


@functools.lru_cache(maxsize=1024)
def parse_limit(text: str | None) -> Limit | None:
    """`600/m`, `10/s`, `5000/1h`, `100/10m`; `off` (or empty, `0`) means unlimited. ValueError says what
    is wrong (the caller names the field)."""
    if text is None or text.strip().lower() in _OFF:
        return None
    match = _LIMIT.fullmatch(text)
    shown = repr(text[:40] + ("..." if len(text) > 40 else ""))
    if not match:
        raise ValueError(f"{shown} is not a rate limit like 600/m, 10/s or 5000/1h (or 'off')")
    requests = int(match.group(1))
    period = int(match.group(2) or 1) * _PERIODS[match.group(3).lower()]
    if not 1 <= requests <= MAX_REQUESTS:
        raise ValueError(f"{shown}: the number of requests must be between 1 and {MAX_REQUESTS:,}")
    if not 1 <= period <= MAX_PERIOD_S:
        raise ValueError(f"{shown}: the period must be between 1 second and 366 days")
    return Limit(requests, period)
