"""`modeldex keys`: create, list and revoke API keys."""

from __future__ import annotations

import datetime as dt

import click

from modeldex.catalog.keys import Scope
from modeldex.cli.common import database_url_option, handle_errors, open_catalog, print_table


def _timestamp(value: int | None) -> str:
    if value is None:
        return "-"
    return dt.datetime.fromtimestamp(value, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


@click.group()
def keys() -> None:
    """Create, list and revoke API keys."""


@keys.command("create")
@click.argument("name")
@click.option("--scope", type=click.Choice([s.value for s in Scope]), default=Scope.READ.value,
              show_default=True, help="read: list and retrieve models; admin: may also change the catalog.")
@database_url_option
@handle_errors
def create(name: str, scope: str, database_url: str | None) -> None:
    """Create a key and print its secret, alone, on stdout.

    The secret is shown this once and stored only as a hash: capture it, e.g.
    KEY=$(modeldex keys create ci --scope read)
    """
    with open_catalog(database_url) as catalog:
        record, secret = catalog.create_key(name, scope)
    click.echo(secret)
    click.echo(f"created {record.scope.value} key {record.name!r}; its secret is shown only once", err=True)


@keys.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked keys.")
@database_url_option
@handle_errors
def list_keys(include_revoked: bool, database_url: str | None) -> None:
    """List keys (never their secrets)."""
    with open_catalog(database_url) as catalog:
        records = catalog.list_keys(include_revoked=include_revoked)
    if not records:
        click.echo("no keys; create one with: modeldex keys create NAME --scope admin", err=True)
        return
    rows = [("NAME", "SCOPE", "KEY", "CREATED", "REVOKED")]
    rows += [(k.name, k.scope.value, k.redacted, _timestamp(k.created_at), _timestamp(k.revoked_at))
             for k in records]
    print_table(rows)


@keys.command("revoke")
@click.argument("name")
@database_url_option
@handle_errors
def revoke(name: str, database_url: str | None) -> None:
    """Revoke the active key NAME; running servers stop accepting it within a second."""
    with open_catalog(database_url) as catalog:
        catalog.revoke_key(name)
    click.echo(f"revoked key {name!r}", err=True)
