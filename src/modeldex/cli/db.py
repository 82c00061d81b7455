"""`modeldex db`: the database schema version, compacting what storage keeps, and backups."""

from __future__ import annotations

import time
from pathlib import Path

import click
from sqlalchemy import inspect

from modeldex.catalog import retention
from modeldex.cli.common import (
    GIVEN_BEFORE_THE_COMMAND,
    database_url_option,
    fail,
    handle_errors,
    open_catalog,
    open_engine,
    redact,
)
from modeldex.config import resolve_database_url, sqlite_path
from modeldex.store import migrate
from modeldex.store.backup import backup_sqlite


@click.group()
def db() -> None:
    """Show or upgrade the database schema; compact the change feed; back up a SQLite catalog."""
    # `modeldex --url URL db ...` would otherwise answer for the local database, as if for the server's.
    if "url" in click.get_current_context().find_root().meta.get(GIVEN_BEFORE_THE_COMMAND, set()):
        raise click.UsageError("`modeldex db` works on a database, not through a server: give --database-url, "
                               "not --url")


@db.command("upgrade")
@database_url_option
@handle_errors
def upgrade(database_url: str | None) -> None:
    """Migrate the database to the schema this modeldex needs."""
    with open_engine(database_url, create=True) as (url, engine):
        migrate.check_upgradable(engine)
        before = migrate.upgrade(engine)  # as found once no other upgrade was running
        after = migrate.current_revision(engine)
    change = f"{before} (up to date)" if before == after else f"{before or '(empty)'} -> {after}"
    click.echo(f"{redact(url)}: schema {change}", err=True)


@db.command("current")
@database_url_option
@handle_errors
def current(database_url: str | None) -> None:
    """Print the database's schema revision (and the one this modeldex needs)."""
    with open_engine(database_url) as (_url, engine):
        revision = migrate.current_revision(engine)
        foreign = revision is None and bool(inspect(engine).get_table_names())
    head = migrate.head_revision()
    if revision == head:
        state = "up to date"
    elif foreign:
        state = "other tables, no modeldex schema: not a modeldex database"
    elif revision is None or revision in migrate.known_revisions():
        state = f"needs upgrade to {head}"
    else:
        state = f"newer than this modeldex, which knows up to {head}: upgrade modeldex"
    click.echo(f"{revision or ('(none)' if foreign else '(empty)')} ({state})")


@db.command("compact")
@click.option("--keep", default=retention.DEFAULT, show_default=True,
              help="Keep changes and revoked keys this long (30d, 12h) or this many versions (100000).")
@database_url_option
@handle_errors
def compact(keep: str, database_url: str | None) -> None:
    """Remove change-feed entries and revoked keys older than --keep (a server does this every 10 minutes
    by its --change-retention)."""
    try:
        kept = retention.parse_retention(keep)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--keep") from None
    if kept is None:
        raise click.BadParameter("'off' keeps everything: nothing to compact", param_hint="--keep")
    with open_catalog(database_url) as catalog:
        compacted = catalog.compact(kept, time.time())
    click.echo(f"removed {compacted.changes} change-feed entries and {compacted.revoked_keys} revoked keys "
               f"(kept: {kept})")


@db.command("backup")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@database_url_option
@handle_errors
def backup(path: Path, database_url: str | None) -> None:
    """Copy the SQLite catalog to PATH (a new file) while servers keep serving and writing it."""
    url = resolve_database_url(database_url)
    source = sqlite_path(url)
    if source is None:
        raise fail(f"`db backup` copies SQLite files; {redact(url)} is not one: back PostgreSQL up with pg_dump")
    done = backup_sqlite(source, path.expanduser().absolute())
    click.echo(f"backed up {source} to {done.path}: catalog version {done.catalog_version}, schema "
               f"{done.schema_revision}, {done.bytes / 1e6:.1f} MB")
