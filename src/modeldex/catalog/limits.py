"""A rate limit as operators write it ("600/m", "20/s", "100/10m", "off"): a domain value, checked where a
key or the server is configured, and counted by `ops/ratelimit.py`."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

_LIMIT = re.compile(r"\s*(\d+)\s*/\s*(\d*)\s*(s|sec|second|m|min|minute|h|hour|d|day)\s*", re.IGNORECASE)
_PERIODS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600,
            "d": 86400, "day": 86400}
_OFF = ("", "0", "off", "none", "unlimited")


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
    """`600/m`, `10/s`, `5000/1h`, `100/10m`; `off` (or empty, `0`) means unlimited."""
    if text is None or text.strip().lower() in _OFF:
        return None
    match = _LIMIT.fullmatch(text)
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a rate limit like 600/m, 10/s or 5000/1h (or 'off')")
    count = int(match.group(2) or 1)
    return Limit(int(match.group(1)), count * _PERIODS[match.group(3).lower()])
