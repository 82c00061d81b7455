"""`modeldex db`: the database schema version, and compacting what storage keeps."""

from __future__ import annotations

import time

import click

from modeldex.catalog import retention
from modeldex.cli.common import database_url_option, handle_errors, open_catalog, open_engine, redact
from modeldex.store import migrate


@click.group()
def db() -> None:
    """Show or upgrade the database schema; compact the change feed."""


@db.command("upgrade")
@database_url_option
@handle_errors
def upgrade(database_url: str | None) -> None:
    """Migrate the database to the schema this modeldex needs."""
    with open_engine(database_url) as (url, engine):
        before = migrate.current_revision(engine)
        migrate.upgrade(engine)
        after = migrate.current_revision(engine)
    click.echo(f"{redact(url)}: schema {before or '(empty)'} -> {after}", err=True)


@db.command("current")
@database_url_option
@handle_errors
def current(database_url: str | None) -> None:
    """Print the database's schema revision (and the one this modeldex needs)."""
    with open_engine(database_url) as (_url, engine):
        revision = migrate.current_revision(engine)
    head = migrate.head_revision()
    state = "up to date" if revision == head else f"needs upgrade to {head}"
    click.echo(f"{revision or '(empty)'} ({state})")


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
