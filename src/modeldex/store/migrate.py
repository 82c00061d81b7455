"""Schema versions, with Alembic.

A new SQLite file is created at the newest schema on first use (the embedded default needs no set-up).
Anything else is never changed behind the operator's back: an empty PostgreSQL database, or any database
at an older schema, is refused until `modeldex db upgrade` has run, so replicas never race to migrate.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from modeldex.catalog.errors import StoreError

_MIGRATIONS = Path(__file__).with_name("migrations")


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "the package ships no migrations"
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    config = _config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def ensure_schema(engine: Engine, create_if_empty: bool) -> None:
    """Create a brand-new database if allowed; refuse one whose schema is not the one this code expects."""
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return
    if current is None:
        if inspect(engine).get_table_names():
            raise StoreError(
                "the database has tables but no modeldex schema version; "
                "point MODELDEX_DATABASE_URL at an empty database or a modeldex one"
            )
        if not create_if_empty:
            raise StoreError(
                "the database has no modeldex schema yet: "
                "run `modeldex db upgrade` (with the same MODELDEX_DATABASE_URL) first"
            )
        try:
            upgrade(engine)
        except Exception:
            # Another process may have created it at the same moment; that is fine if it got to head.
            if current_revision(engine) != head:
                raise
        return
    known = {script.revision for script in ScriptDirectory.from_config(_config()).walk_revisions()}
    if current in known:
        raise StoreError(
            f"the database schema is at revision {current}, this modeldex needs {head}: "
            "run `modeldex db upgrade` (with the same MODELDEX_DATABASE_URL) first"
        )
    raise StoreError(
        f"the database schema is at revision {current}, newer than this modeldex knows (newest: {head}): "
        "upgrade modeldex, or point it at another database"
    )
