"""`modeldex issuers`: identity providers whose tokens (JWTs) are accepted beside API keys."""

from __future__ import annotations

from typing import Any

import click

from modeldex.catalog.issuers import ALGORITHMS
from modeldex.cli.common import backend_options, handle_errors, open_backend, print_table


@click.group()
def issuers() -> None:
    """Trusted identity providers (OpenID Connect, or a JWKS URL, or a public key): add, list, remove."""


@issuers.command("add")
@click.argument("name")
@click.option("--issuer", "issuer_url", required=True, metavar="URL",
              help="The issuer URL, exactly as tokens' `iss` claim says it.")
@click.option("--jwks-url", metavar="URL", help="Where its keys are (default: OpenID Connect discovery).")
@click.option("--public-key", "public_key_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="A PEM public key file to verify tokens with, instead of fetching keys.")
@click.option("--audience", "audiences", required=True, multiple=True, metavar="AUD",
              help="An audience tokens must name in `aud` (repeatable).")
@click.option("--algorithm", "algorithms", multiple=True, type=click.Choice(ALGORITHMS), metavar="ALG",
              help=f"An accepted signing algorithm (repeatable; default RS256): {', '.join(ALGORITHMS)}.")
@click.option("--leeway", type=int, metavar="SECONDS", help="Clock skew forgiven on exp/nbf/iat (default 60).")
@click.option("--subject-claim", metavar="CLAIM", help="The claim naming the caller (default: sub).")
@click.option("--groups-claim", metavar="CLAIM",
              help="The claim whose values name modeldex groups (default: groups; dotted paths reach into "
              "nested claims, e.g. realm_access.roles).")
@click.option("--admin-value", metavar="VALUE", help="A groups-claim value that grants the admin scope.")
@click.option("--default-group", metavar="GROUP",
              help="The policy of tokens naming no modeldex group (default: all models).")
@click.option("--rate-limit", metavar="LIMIT", help="Per subject, e.g. 600/m (default: the server's).")
@backend_options
@handle_errors
def add(name: str, issuer_url: str, jwks_url: str | None, public_key_file: str | None, audiences: tuple[str, ...],
        algorithms: tuple[str, ...], database_url: str | None, url: str | None, api_key: str | None,
        **options: Any) -> None:
    """Trust tokens from issuer NAME. Without --jwks-url or --public-key, its keys are found through the
    issuer's OpenID Connect discovery document."""
    if jwks_url and public_key_file:
        raise click.UsageError("--jwks-url and --public-key are alternatives: give one (or neither)")
    data: dict[str, Any] = {"name": name, "issuer": issuer_url, "audiences": list(audiences)}
    if jwks_url:
        data["jwks_url"] = jwks_url
    if public_key_file:
        try:
            with open(public_key_file, encoding="utf-8") as handle:
                data["public_key"] = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise click.BadParameter(f"cannot read {public_key_file}: "
                                     f"{getattr(exc, 'strerror', None) or type(exc).__name__}",
                                     param_hint="--public-key") from None
    if algorithms:
        data["algorithms"] = list(algorithms)
    data.update({k: v for k, v in options.items() if v is not None})
    with open_backend(database_url, url, api_key) as backend:
        backend.create("issuer", data)
    source = "its public key" if public_key_file else jwks_url or "OpenID Connect discovery"
    click.echo(f"issuer {name}: tokens from {issuer_url} for {', '.join(audiences)} (keys: {source})", err=True)


@issuers.command("list")
@backend_options
@handle_errors
def list_issuers(database_url: str | None, url: str | None, api_key: str | None) -> None:
    """List trusted issuers."""
    with open_backend(database_url, url, api_key) as backend:
        entries = backend.entries("issuer")
    rows = [("NAME", "ISSUER", "AUDIENCES", "ALGORITHMS", "KEYS", "ADMIN VALUE", "DEFAULT GROUP", "RATE LIMIT")]
    for entry in sorted(entries, key=lambda e: e["name"]):
        keys = "public key" if entry.get("public_key") else entry.get("jwks_url") or "discovery"
        rows.append((entry["name"], entry["issuer"], ",".join(entry["audiences"]), ",".join(entry["algorithms"]),
                     keys, entry.get("admin_value") or "-", entry.get("default_group") or "-",
                     entry.get("rate_limit") or "-"))
    print_table(rows)


@issuers.command("remove")
@click.argument("name")
@backend_options
@handle_errors
def remove(name: str, database_url: str | None, url: str | None, api_key: str | None) -> None:
    """Stop trusting issuer NAME: its tokens are refused from the next catalog version on."""
    with open_backend(database_url, url, api_key) as backend:
        backend.delete("issuer", name)
    click.echo(f"removed issuer {name}", err=True)
