"""`modeldex groups`: named sets of models (ids or globs) that key policies refer to."""

from __future__ import annotations

import click

from modeldex.cli.common import backend_options, handle_errors, open_backend, print_table


@click.group()
def groups() -> None:
    """List, set and remove groups."""


@groups.command("list")
@backend_options
@handle_errors
def list_groups(database_url: str | None, url: str | None, api_key: str | None) -> None:
    """List groups and their members."""
    with open_backend(database_url, url, api_key) as backend:
        entries = backend.entries("group")
    rows = [("GROUP", "MEMBERS")]
    rows += [(g["name"], " ".join(g.get("members", []))) for g in sorted(entries, key=lambda g: g["name"])]
    print_table(rows)


@groups.command("set")
@click.argument("name")
@click.argument("members", nargs=-1)
@click.option("--description", default=None, help="What the group is for (kept in the catalog and its export).")
@backend_options
@handle_errors
def set_group(name: str, members: tuple[str, ...], description: str | None, database_url: str | None,
              url: str | None, api_key: str | None) -> None:
    """Create group NAME, or replace its members: model ids or globs such as 'MiniMax-*'."""
    fields = {"members": list(members)}
    if description is not None:
        fields["description"] = description  # type: ignore[assignment]
    with open_backend(database_url, url, api_key) as backend:
        existing = {g["name"] for g in backend.entries("group")}
        if name in existing:
            backend.update("group", name, fields, None)
        else:
            backend.create("group", {"name": name, **fields})
    click.echo(f"group {name}: {' '.join(members) or '(no members)'}", err=True)


@groups.command("remove")
@click.argument("name")
@backend_options
@handle_errors
def remove(name: str, database_url: str | None, url: str | None, api_key: str | None) -> None:
    """Remove group NAME (keys that name it no longer see its models)."""
    with open_backend(database_url, url, api_key) as backend:
        backend.delete("group", name)
    click.echo(f"removed group {name}", err=True)
