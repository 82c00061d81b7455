"""Where settings come from: command-line flags, then MODELDEX_* environment variables, then defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

DATABASE_URL_ENV = "MODELDEX_DATABASE_URL"


def default_database_url() -> str:
    """A SQLite file in the per-user data directory (e.g. ~/.local/share/modeldex/catalog.db)."""
    path = Path(platformdirs.user_data_dir("modeldex", appauthor=False)) / "catalog.db"
    return f"sqlite:///{path}"


def resolve_database_url(flag: str | None) -> str:
    return flag or os.environ.get(DATABASE_URL_ENV) or default_database_url()


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() not in ("0", "false", "no", "off", "")


@dataclass(frozen=True)
class ServerSettings:
    """What a server process (and each of its workers) needs to know; passed to workers as env vars."""

    database_url: str
    refresh_interval: float = 0.2
    access_log: bool = True
    metadata: bool = False

    def to_env(self) -> dict[str, str]:
        return {
            DATABASE_URL_ENV: self.database_url,
            "MODELDEX_REFRESH_INTERVAL": str(self.refresh_interval),
            "MODELDEX_ACCESS_LOG": "1" if self.access_log else "0",
            "MODELDEX_METADATA": "1" if self.metadata else "0",
        }

    @classmethod
    def from_env(cls) -> ServerSettings:
        return cls(
            database_url=resolve_database_url(None),
            refresh_interval=float(os.environ.get("MODELDEX_REFRESH_INTERVAL", "0.2")),
            access_log=_flag("MODELDEX_ACCESS_LOG", True),
            metadata=_flag("MODELDEX_METADATA", False),
        )
