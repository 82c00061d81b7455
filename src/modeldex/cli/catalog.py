"""`modeldex catalog` and `modeldex changes`: the catalog as a YAML file, and what changed since when."""

from __future__ import annotations

import datetime as dt
from typing import TextIO

import click

from modeldex.catalog.catalog_file import PlannedChange, dump_yaml, load_yaml
from modeldex.cli.common import backend_options, handle_errors, open_backend, print_table


@click.group()
def catalog() -> None:
    """Export the catalog as YAML, or make the catalog match a YAML file."""


@catalog.command("export")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write to this file instead of stdout.")
@backend_options
@handle_errors
def export(output: str | None, database_url: str | None, url: str | None, api_key: str | None) -> None:
    """Write models, aliases and groups (never keys) as YAML."""
    with open_backend(database_url, url, api_key) as backend:
        text = dump_yaml(backend.export())
    if output:
        with open(output, "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        click.echo(text, nl=False)


@catalog.command("apply")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.option("--prune", is_flag=True, help="Also remove what the file does not list.")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@backend_options
@handle_errors
def apply(file: TextIO, prune: bool, dry_run: bool, database_url: str | None, url: str | None,
          api_key: str | None) -> None:
    """Make the catalog match FILE (YAML; `-` reads stdin): all of it, or nothing if any entry is invalid."""
    document = load_yaml(file.read())
    with open_backend(database_url, url, api_key) as backend:
        result = backend.apply(document, prune, dry_run)
    for change in result["changes"]:
        click.echo(PlannedChange(change["op"], change["entity"], change["id"], tuple(change["fields"])).line())
    count = len(result["changes"])
    if dry_run:
        click.echo(f"dry run: {count} change(s) would be made; nothing was changed", err=True)
    elif count:
        click.echo(f"applied {count} change(s); catalog version {result['version']}", err=True)
    else:
        click.echo("nothing to change: the catalog already matches the file", err=True)


@click.command()
@click.option("--since", type=int, default=0, show_default=True, help="Show changes after this version.")
@click.option("--limit", type=int, default=100, show_default=True)
@backend_options
@handle_errors
def changes(since: int, limit: int, database_url: str | None, url: str | None, api_key: str | None) -> None:
    """The change feed: who changed what, at which catalog version."""
    with open_backend(database_url, url, api_key) as backend:
        feed = backend.changes(since, limit)
    rows = [("VERSION", "AT", "ACTOR", "CHANGE")]
    sign = {"create": "+", "update": "~", "delete": "-"}
    for c in feed["data"]:
        at = dt.datetime.fromtimestamp(c["at"], dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        rows.append((str(c["version"]), at, c["actor"], f"{sign[c['op']]} {c['entity']} {c['id']}"))
    print_table(rows)
    click.echo(f"catalog version {feed['version']}", err=True)


