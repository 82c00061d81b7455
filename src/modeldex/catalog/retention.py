"""How long the change feed and revoked keys are kept: a domain value, set where the server or the CLI is
configured, applied by the store's `compact`.

Without it storage grows with every write forever (the feed keeps each change's before and after; revoked
keys stay for the record). Operators keep either an age (`30d`, `12h`, `90m`) or a number of catalog
versions (`100000`); `off` keeps everything. A server that needs a version that was compacted away (a
replica far behind) loads the whole catalog instead, as it would for any gap in the feed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_AGE = re.compile(r"\s*(\d+)\s*(s|m|h|d)\s*", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_AGE_S = 100 * 365 * 86400
MAX_VERSIONS = 2**62
DEFAULT = "30d"


@dataclass(frozen=True, slots=True)
class Retention:
    """Keep changes (and revoked keys) younger than `max_age_s`, or the last `versions` versions."""

    max_age_s: int | None = None
    versions: int | None = None

    def __str__(self) -> str:
        if self.versions is not None:
            return str(self.versions)
        assert self.max_age_s is not None
        for unit, seconds in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
            if self.max_age_s % seconds == 0:
                return f"{self.max_age_s // seconds}{unit}"
        raise AssertionError("unreachable: every age is a whole number of seconds")


def parse_retention(text: str | None) -> Retention | None:
    """`30d`, `12h`, `90m`, `3600s` (an age) or `100000` (versions); `off` keeps everything (None)."""
    if text is None or text.strip().lower() in ("off", "none", "forever", ""):
        return None
    value = text.strip()
    if value.isdigit():
        versions = int(value)
        if not 1 <= versions <= MAX_VERSIONS:
            raise ValueError(f"{text!r}: keep at least 1 version")
        return Retention(versions=versions)
    match = _AGE.fullmatch(value)
    if match is None:
        raise ValueError(f"{text!r} is not a retention like 30d, 12h or 90m, a number of versions, or 'off'")
    age = int(match.group(1)) * _UNITS[match.group(2).lower()]
    if not 60 <= age <= MAX_AGE_S:
        raise ValueError(f"{text!r}: keep changes for at least a minute and at most 100 years")
    return Retention(max_age_s=age)


@dataclass(frozen=True, slots=True)
class Compacted:
    """What a compaction removed."""

    changes: int
    revoked_keys: int
