"""`modeldex keys`: create, list, update, explain and revoke API keys."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from modeldex.catalog.callers import Scope
from modeldex.cli.common import backend_options, handle_errors, open_backend, print_table


def _timestamp(value: int | None) -> str:
    if value is None:
        return "-"
    return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _describe_policy(policy: dict[str, Any]) -> str:
    if policy.get("all"):
        return "all models"
    parts = [f"group:{g}" for g in policy.get("groups", [])] + list(policy.get("patterns", []))
    return ",".join(parts)


def _policy(groups: tuple[str, ...], patterns: tuple[str, ...], all_models: bool) -> dict[str, Any] | None:
    if all_models and (groups or patterns):
        raise click.UsageError("--all-models cannot be combined with --group or --pattern")
    if all_models:
        return {"all": True}
    if groups or patterns:
        return {"groups": list(groups), "patterns": list(patterns)}
    return None


policy_options = [
    click.option("--group", "groups", multiple=True, help="The key sees this group's models (repeatable)."),
    click.option("--pattern", "patterns", multiple=True,
                 help="The key sees models whose id matches this glob, e.g. 'MiniMax-*' (repeatable)."),
]


def with_policy_options(command: Any) -> Any:
    for option in reversed(policy_options):
        command = option(command)
    return command


@click.group()
def keys() -> None:
    """Create, list, update, explain and revoke API keys."""


rate_limit_option = click.option(
    "--rate-limit", default=None,
    help="The key's own limit, e.g. 600/m or 20/s; 'unlimited' exempts it; 'default' follows the server's.")


@keys.command("create")
@click.argument("name")
@click.option("--scope", type=click.Choice([s.value for s in Scope]), default=Scope.READ.value,
              show_default=True, help="read: list and retrieve models; admin: may also change the catalog.")
@with_policy_options
@rate_limit_option
@backend_options
@handle_errors
def create(name: str, scope: str, groups: tuple[str, ...], patterns: tuple[str, ...], rate_limit: str | None,
           database_url: str | None, url: str | None, api_key: str | None) -> None:
    """Create a key and print its secret, alone, on stdout.

    The secret is shown this once and stored only as a hash: capture it, e.g.
    KEY=$(modeldex keys create ci --scope read). Without --group/--pattern the key sees all models.
    """
    with open_backend(database_url, url, api_key) as backend:
        record, secret = backend.create_key(name, scope, _policy(groups, patterns, False), rate_limit)
    click.echo(secret)
    click.echo(f"created {record['scope']} key {record['name']!r} ({_describe_policy(record['policy'])}); "
               "its secret is shown only once", err=True)


@keys.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked keys.")
@backend_options
@handle_errors
def list_keys(include_revoked: bool, database_url: str | None, url: str | None, api_key: str | None) -> None:
    """List keys (never their secrets)."""
    with open_backend(database_url, url, api_key) as backend:
        records = backend.list_keys(include_revoked)
    if not records:
        click.echo("no keys; create one with: modeldex keys create NAME --scope admin", err=True)
        return
    rows = [("NAME", "SCOPE", "KEY", "SEES", "RATE LIMIT", "CREATED", "REVOKED")]
    rows += [(k["name"], k["scope"], k["key"], _describe_policy(k["policy"]), k.get("rate_limit") or "default",
              _timestamp(k["created_at"]), _timestamp(k["revoked_at"])) for k in records]
    print_table(rows)


@keys.command("update")
@click.argument("name")
@click.option("--scope", type=click.Choice([s.value for s in Scope]), default=None, help="A new scope.")
@with_policy_options
@click.option("--all-models", is_flag=True, help="Let the key see every model again.")
@rate_limit_option
@backend_options
@handle_errors
def update(name: str, scope: str | None, groups: tuple[str, ...], patterns: tuple[str, ...], all_models: bool,
           rate_limit: str | None, database_url: str | None, url: str | None, api_key: str | None) -> None:
    """Change a key's scope, what it sees (--group/--pattern replace its policy) or its rate limit."""
    policy = _policy(groups, patterns, all_models)
    if scope is None and policy is None and rate_limit is None:
        raise click.UsageError("nothing to change: give at least one option")
    with open_backend(database_url, url, api_key) as backend:
        record = backend.update_key(name, scope, policy, rate_limit)
    click.echo(f"{record['name']}: {record['scope']}, sees {_describe_policy(record['policy'])}", err=True)


@keys.command("explain")
@click.argument("name")
@click.argument("model_id", metavar="MODEL")
@backend_options
@handle_errors
def explain(name: str, model_id: str, database_url: str | None, url: str | None, api_key: str | None) -> None:
    """Say whether key NAME sees MODEL, and which rule decided."""
    with open_backend(database_url, url, api_key) as backend:
        answer = backend.explain(name, model_id)
    verdict = "visible" if answer["visible"] else "not visible"
    click.echo(f"{model_id}: {verdict} to key {name!r}: {answer['rule']}")


@keys.command("revoke")
@click.argument("name")
@backend_options
@handle_errors
def revoke(name: str, database_url: str | None, url: str | None, api_key: str | None) -> None:
    """Revoke the active key NAME; running servers stop accepting it within a second."""
    with open_backend(database_url, url, api_key) as backend:
        backend.revoke_key(name)
    click.echo(f"revoked key {name!r}", err=True)
