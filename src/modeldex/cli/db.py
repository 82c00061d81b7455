"""`modeldex db`: the database schema version."""

from __future__ import annotations

import click

from modeldex.cli.common import database_url_option, handle_errors, open_engine, redact
from modeldex.store import migrate


@click.group()
def db() -> None:
    """Show or upgrade the database schema."""


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
