"""`modeldex aliases`: other names for models (`MiniMax-latest` -> `MiniMax-M3`)."""

from __future__ import annotations

import click

from modeldex.cli.common import backend_options, handle_errors, open_backend, print_table


@click.group()
def aliases() -> None:
    """List, add, retarget and remove aliases."""


@aliases.command("list")
@backend_options
@handle_errors
def list_aliases(database_url: str | None, url: str | None, api_key: str | None) -> None:
    """List aliases."""
    with open_backend(database_url, url, api_key) as backend:
        entries = backend.entries("alias")
    rows = [("ALIAS", "TARGET", "LISTED")]
    rows += [(a["id"], a["target"], "no" if a.get("hidden") else "yes") for a in sorted(entries, key=lambda a: a["id"])]
    print_table(rows)


@aliases.command("add")
@click.argument("alias")
@click.argument("target")
@click.option("--hidden", is_flag=True, help="Answer retrieve by this name, but leave it out of lists.")
@backend_options
@handle_errors
def add(alias: str, target: str, hidden: bool, database_url: str | None, url: str | None,
        api_key: str | None) -> None:
    """Make ALIAS another name for the model TARGET."""
    with open_backend(database_url, url, api_key) as backend:
        backend.create("alias", {"id": alias, "target": target, "hidden": hidden})
    click.echo(f"added alias {alias} -> {target}", err=True)


@aliases.command("retarget")
@click.argument("alias")
@click.argument("target")
@backend_options
@handle_errors
def retarget(alias: str, target: str, database_url: str | None, url: str | None, api_key: str | None) -> None:
    """Point ALIAS at another model."""
    with open_backend(database_url, url, api_key) as backend:
        backend.update("alias", alias, {"target": target}, None)
    click.echo(f"alias {alias} -> {target}", err=True)


@aliases.command("remove")
@click.argument("alias")
@backend_options
@handle_errors
def remove(alias: str, database_url: str | None, url: str | None, api_key: str | None) -> None:
    """Remove ALIAS (the model stays)."""
    with open_backend(database_url, url, api_key) as backend:
        backend.delete("alias", alias)
    click.echo(f"removed alias {alias}", err=True)
