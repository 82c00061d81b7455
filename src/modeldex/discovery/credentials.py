"""Whether an upstream's credential changed since its last poll, without keeping the credential.

The poll records a salted, slow fingerprint of the key it sent (PBKDF2-SHA256: an upstream's key may be
short enough to guess from a fast hash). A server that starts with a different key in the variable polls
that upstream at once instead of waiting out its interval.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections.abc import Mapping

NO_KEY = "none"  # no variable named, or it is unset or blank: nothing secret to hide
_ALGORITHM = "pbkdf2-sha256"
_ITERATIONS = 50_000  # ~25 ms: paid once per key and process, and once per upstream at a server's start
_memo: dict[str, str] = {}
_memo_lock = threading.Lock()


def current_key(environ: Mapping[str, str], name: str | None) -> str | None:
    """The key the poll would send (as `fetch.api_key_from` reads it), or None."""
    value = environ.get(name, "").strip() if name else ""
    return value or None


def _digest(key: str, salt: bytes, iterations: int) -> str:
    return hashlib.pbkdf2_hmac("sha256", key.encode(), salt, iterations).hex()


def fingerprint(key: str | None) -> str:
    """What is stored of `key`: `pbkdf2-sha256$ITERATIONS$SALT$DIGEST`, or `none`."""
    if key is None:
        return NO_KEY
    with _memo_lock:
        known = _memo.get(key)
    if known is None:
        salt = os.urandom(16)
        known = f"{_ALGORITHM}${_ITERATIONS}${salt.hex()}${_digest(key, salt, _ITERATIONS)}"
        with _memo_lock:
            _memo[key] = known
    return known


def matches(stored: str | None, key: str | None) -> bool:
    """Whether `key` is the one `stored` was made from; an unknown or unreadable record matches nothing."""
    if stored is None:
        return False
    if stored == NO_KEY or key is None:
        return stored == NO_KEY and key is None
    try:
        algorithm, iterations, salt, digest = stored.split("$")
        if algorithm != _ALGORITHM:
            return False
        return hmac.compare_digest(_digest(key, bytes.fromhex(salt), int(iterations)), digest)
    except ValueError:
        return False
