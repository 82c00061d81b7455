"""A consistent copy of a live SQLite catalog, taken with SQLite's online backup API.

The copy is one step: a single read transaction, so it is the catalog as of one version however the servers
keep writing (in WAL mode, the default, readers hold up no writer). It is written beside the target under a
temporary name, checked, and then renamed: a failed or interrupted backup never leaves a partial file under
the name asked for.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from modeldex.catalog.errors import StoreError


@dataclass(frozen=True)
class Backup:
    path: Path
    bytes: int
    catalog_version: int
    schema_revision: str | None


def backup_sqlite(source: Path, target: Path) -> Backup:
    try:
        return _backup(source, target)
    except OSError as exc:  # a name too long, a folder not writable, a full disk
        raise StoreError(f"cannot write the backup to {target}: {exc.strerror or exc}") from None


def _new_file(partial: Path, target: Path) -> sqlite3.Connection:
    """The copy's file, created now: a folder it cannot be written in is the target's fault, not the source's."""
    try:
        return sqlite3.connect(partial)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot write the backup to {target}: {exc}") from None


def _backup(source: Path, target: Path) -> Backup:
    if not source.exists():
        raise StoreError(f"no database at {source}")
    if target.exists():
        raise StoreError(f"{target} exists already: name a new file")
    if not target.parent.is_dir():
        raise StoreError(f"no folder {target.parent} for the backup")
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        with sqlite3.connect(source, timeout=5) as origin, _new_file(partial, target) as copy:
            origin.backup(copy)  # all pages in one step: one snapshot, never restarted by a write
            if copy.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                raise StoreError("the copy does not pass SQLite's integrity check; nothing was written")
            version = int(copy.execute("SELECT version FROM catalog_state").fetchone()[0])
            revision = copy.execute("SELECT version_num FROM alembic_version").fetchone()
        origin.close()
        copy.close()
        partial.rename(target)
    except sqlite3.Error as exc:
        raise StoreError(f"backing up {source} failed: {exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    return Backup(target, target.stat().st_size, version, revision[0] if revision else None)
