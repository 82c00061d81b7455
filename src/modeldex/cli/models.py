"""`modeldex models`: list, add and remove catalog entries."""

from __future__ import annotations

import datetime as dt

import click

from modeldex.cli.common import database_url_option, handle_errors, open_catalog, print_table


@click.group()
def models() -> None:
    """List, add and remove models."""


@models.command("list")
@database_url_option
@handle_errors
def list_models(database_url: str | None) -> None:
    """List the catalog, newest first, as the API lists it."""
    with open_catalog(database_url) as catalog:
        entries = catalog.list_models()
    rows = [("ID", "OWNED_BY", "CREATED")]
    rows += [(m.id, m.owned_by, f"{m.created} ({dt.datetime.fromtimestamp(m.created, dt.timezone.utc):%Y-%m-%d})")
             for m in entries]
    print_table(rows)


@models.command("add")
@click.argument("model_id", metavar="ID")
@click.option("--owned-by", default="system", show_default=True, help="The owned_by field.")
@click.option("--created", type=int, default=None, help="Unix timestamp (seconds). Default: now.")
@database_url_option
@handle_errors
def add(model_id: str, owned_by: str, created: int | None, database_url: str | None) -> None:
    """Add the model ID; running servers serve it within a second."""
    with open_catalog(database_url) as catalog:
        model = catalog.add_model(model_id, owned_by=owned_by, created=created)
    click.echo(f"added {model.id} (owned_by {model.owned_by}, created {model.created})", err=True)


@models.command("remove")
@click.argument("model_id", metavar="ID")
@database_url_option
@handle_errors
def remove(model_id: str, database_url: str | None) -> None:
    """Remove the model ID."""
    with open_catalog(database_url) as catalog:
        catalog.remove_model(model_id)
    click.echo(f"removed {model_id}", err=True)
