"""`modeldex auth explain`: what modeldex makes of a bearer token from an identity provider."""

from __future__ import annotations

import sys

import click
import orjson

from modeldex.cli.common import backend_options, handle_errors, open_backend


@click.group()
def auth() -> None:
    """How callers are identified."""


@auth.command("explain")
@click.argument("token")
@backend_options
@handle_errors
def explain(token: str, database_url: str | None, url: str | None, api_key: str | None) -> None:
    """Whether TOKEN (a JWT; `-` reads it from stdin) would be accepted, as whom, with which scope and
    policy, or why not. Exit status 1 when it would be refused."""
    if token == "-":
        token = sys.stdin.readline().strip()
    with open_backend(database_url, url, api_key) as backend:
        report = backend.explain_token(token)
    click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    if not report.get("accepted"):
        sys.exit(1)
