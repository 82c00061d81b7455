"""Where settings come from: command-line flags, then MODELDEX_* environment variables, then defaults.

`serve` resolves its flags into ServerSettings and hands them to each worker process as MODELDEX_*
environment variables (workers are separate processes started by the HTTP server).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs

if TYPE_CHECKING:
    from granian.http import HTTP1Settings, HTTP2Settings

DATABASE_URL_ENV = "MODELDEX_DATABASE_URL"


def default_database_url() -> str:
    """A SQLite file in the per-user data directory (e.g. ~/.local/share/modeldex/catalog.db)."""
    path = Path(platformdirs.user_data_dir("modeldex", appauthor=False)) / "catalog.db"
    return f"sqlite:///{path}"


def resolve_database_url(flag: str | None) -> str:
    """The URL to use, a SQLite path made absolute: a relative one (sqlite:///data/catalog.db) is resolved
    against the current folder once, here, so the messages show which file it is and a server's workers
    use the same one."""
    return absolute_sqlite_url(flag or os.environ.get(DATABASE_URL_ENV) or default_database_url())


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (absolute, ~ expanded); None for other databases or an in-memory one."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # not a URL (or a port that is no number): the store says so
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database).expanduser().absolute()


def absolute_sqlite_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    path = sqlite_path(url)
    if path is None:
        return url
    return make_url(url).set(database=str(path)).render_as_string(hide_password=False)


def is_default_database(url: str) -> bool:
    """The default location is the one whose missing folders modeldex creates; any other must exist."""
    return url == absolute_sqlite_url(default_database_url())


def _env_name(field: str) -> str:
    return "MODELDEX_" + field.upper()


def _parse(kind: object, raw: str) -> object:
    if kind in (bool, "bool"):
        return raw.strip().lower() not in ("0", "false", "no", "off", "")
    if kind in (int, "int"):
        return int(raw)
    if kind in (float, "float"):
        return float(raw)
    if kind in ("tuple[str, ...]",):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw if raw != "" else None


# Bytes of a request head beyond --max-header-bytes that granian's HTTP layer reads before it refuses the
# head itself (the request line's room; hyper's buffer cannot be under 8,192 bytes, and this keeps it above).
HEAD_ALLOWANCE = 8 * 1024
# `serve`'s defaults for granian's listener, here so that bench/ceiling.py starts granian exactly as `serve`
# does without importing it (that would load modeldex's whole app into the ceiling).
BACKLOG = 4096  # --backlog
MAX_CONNECTIONS = 10_000  # --max-connections
HEADER_TIMEOUT_S = 10  # --header-timeout


def http_layer(max_header_bytes: int, header_timeout: float) -> tuple[HTTP1Settings, HTTP2Settings]:
    """granian's HTTP/1 and HTTP/2 settings for `serve`'s header limits.

    granian hides from the app every header value it cannot decode as text (a byte >= 0x80), so the app's
    count for --max-header-bytes misses them: 100,000 such bytes were answered 200 under the 16 KiB default
    (hyper's buffer was 408 KiB). hyper's read buffer, sized from the limit, bounds the whole head instead,
    roughly: it reads in growing chunks and refuses a head still unfinished when the buffer is past this size
    (with its bare 431). Under the default, 30,000 such bytes still passed and 40,000 were refused; a head
    within the limit always passes (HEAD_ALLOWANCE: the request line). Over HTTP/2 (h2c, or h2 over TLS) the
    bound is the header list's size, which granian left at 16 MiB."""
    from granian.http import HTTP1Settings, HTTP2Settings

    return (HTTP1Settings(header_read_timeout=round(header_timeout * 1000),
                          max_buffer_size=max_header_bytes + HEAD_ALLOWANCE),
            HTTP2Settings(max_headers_size=max_header_bytes + HEAD_ALLOWANCE))


@dataclass(frozen=True)
class ServerSettings:
    """What a server process (and each of its workers) needs to know."""

    database_url: str
    refresh_interval: float = 0.2
    access_log: bool = True
    log_format: str = "text"  # or "json"
    metadata: bool = False
    rate_limit: str | None = None  # default per-key limit, e.g. "600/m"; None: unlimited
    auth_failure_limit: str | None = "30/m"  # failed authentications per client address
    redis_url: str | None = None  # share rate-limit buckets across workers and replicas
    redis_timeout: float = 0.05  # seconds to connect to / hear from Redis before counting in memory
    cors_origins: tuple[str, ...] = ()
    forwarded_allow_ips: tuple[str, ...] = ()
    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 4 * 1024 * 1024
    body_timeout: float = 60.0  # seconds a request body may go with no part of it arriving (then 408)
    metrics_token: str | None = None
    public_metrics: bool = False  # /metrics without a key (e.g. when only reachable internally)
    database_timeout: float = 5.0  # seconds any wait on the database may last (store/sql.py)
    change_retention: str | None = "30d"  # the change feed and revoked keys: an age, versions, or None
    # The inference gateway: seconds per phase of an upstream request, targets tried, largest request body.
    upstream_connect_timeout: float = 10.0
    upstream_first_byte_timeout: float = 600.0
    upstream_idle_timeout: float = 120.0
    upstream_total_timeout: float = 1800.0
    upstream_attempts: int = 3
    max_inference_body_bytes: int = 64 * 1024 * 1024
    # Issuers' key sets: refreshed at least this often (seconds; the bound on how long a key removed from a
    # provider's set still verifies tokens), and at most once per jwks_min_refresh for unknown `kid`s.
    jwks_max_age: float = 300.0
    jwks_min_refresh: float = 10.0
    console: bool = True  # the web console at /console
    tls: bool = False  # served over TLS: the console's cookie is marked Secure

    def to_env(self) -> dict[str, str]:
        env = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, tuple):
                value = ",".join(value)
            elif isinstance(value, bool):
                value = "1" if value else "0"
            env[_env_name(field.name)] = "" if value is None else str(value)
        return env

    @classmethod
    def from_env(cls) -> ServerSettings:
        values: dict[str, object] = {"database_url": resolve_database_url(None)}
        for field in dataclasses.fields(cls):
            raw = os.environ.get(_env_name(field.name))
            if field.name == "database_url" or raw is None:
                continue
            kind = str(field.type).replace(" | None", "")
            values[field.name] = _parse(kind, raw)
        return cls(**values)  # type: ignore[arg-type]
