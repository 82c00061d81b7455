"""Schema versions, with Alembic.

A new SQLite file is created at the newest schema on first use (the embedded default needs no set-up).
Anything else is never changed behind the operator's back: an empty PostgreSQL database, or any database
at an older schema, is refused until `modeldex db upgrade` has run, so replicas never race to migrate.

Opening a database at the current schema does not import Alembic: `SCHEMA_REVISION` names the newest
migration (a test checks it against Alembic's head), and the stored revision is one query. Alembic is
loaded only to migrate, which saves every CLI command and server start ~0.1 s (measured).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text

from modeldex.catalog.errors import StoreError

if TYPE_CHECKING:
    from alembic.config import Config

SCHEMA_REVISION = "0009"  # the newest file in migrations/versions/
_MIGRATIONS = Path(__file__).with_name("migrations")


def _config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


def head_revision() -> str:
    """The newest migration, as Alembic reads it from the migration scripts."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "the package ships no migrations"
    return head


def current_revision(engine: Engine) -> str | None:
    """The schema revision stored in the database (Alembic's `alembic_version` table), if any."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


# The PostgreSQL advisory lock a migration holds (a constant of modeldex's own: "mdx-migr").
MIGRATION_LOCK = 0x6D64782D6D696772


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Migrate to `revision`, in one transaction; returns the revision the database was at.

    One migration at a time: the transaction first takes the database's migration lock (PostgreSQL's
    advisory lock, SQLite's write lock), then reads the revision. Several `db upgrade` at once (a deploy
    that runs it before each replica) used to read the same old revision and race: one migrated, the
    others failed with a database error. Now they wait their turn, then find nothing to do."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    config = _config()
    with engine.execution_options(modeldex_write=True).begin() as conn:  # SQLite: BEGIN IMMEDIATE
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        before = MigrationContext.configure(conn).get_current_revision()
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    return before


def known_revisions() -> set[str]:
    """Every revision this modeldex has a migration for."""
    from alembic.script import ScriptDirectory

    return {script.revision for script in ScriptDirectory.from_config(_config()).walk_revisions()}


def _newer(current: str) -> StoreError:
    return StoreError(
        f"the database schema is at revision {current}, newer than this modeldex knows (newest: {head_revision()}): "
        "upgrade modeldex, or point it at another database"
    )


def _foreign() -> StoreError:
    return StoreError(
        "the database has tables but no modeldex schema version; "
        "point MODELDEX_DATABASE_URL at an empty database or a modeldex one"
    )


def check_upgradable(engine: Engine) -> None:
    """Refuse what `db upgrade` must not touch: a schema from a newer modeldex (there is no migration to it,
    nor back), or another application's tables (a mistyped URL must not add modeldex's tables to them)."""
    current = current_revision(engine)
    if current is None:
        if inspect(engine).get_table_names():
            raise _foreign()
    elif current not in known_revisions():
        raise _newer(current)


def ensure_schema(engine: Engine, create_if_empty: bool) -> None:
    """Create a brand-new database if allowed; refuse one whose schema is not the one this code expects."""
    current = current_revision(engine)
    if current == SCHEMA_REVISION:
        return
    head = head_revision()
    if current is None:
        if inspect(engine).get_table_names():
            raise _foreign()
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
    if current in known_revisions():
        raise StoreError(
            f"the database schema is at revision {current}, this modeldex needs {head}: "
            "run `modeldex db upgrade` (with the same MODELDEX_DATABASE_URL) first"
        )
    raise _newer(current)
