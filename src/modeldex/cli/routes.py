"""`modeldex routes`: which upstream serves inference requests for a model (the gateway's routing)."""

from __future__ import annotations

import click

from modeldex.cli.common import backend_options, handle_errors, open_backend, print_table


@click.group()
def routes() -> None:
    """Where inference requests for a model go: add, list, remove. A discovered model needs none: it goes
    to the upstream that listed it."""


@routes.command("add")
@click.argument("model")
@click.argument("upstream")
@click.option("--upstream-model", metavar="ID", help="The upstream's own id for the model (default: MODEL).")
@click.option("--weight", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="Share of requests among the model's healthy routes.")
@backend_options
@handle_errors
def add(model: str, upstream: str, upstream_model: str | None, weight: int, database_url: str | None,
        url: str | None, api_key: str | None) -> None:
    """Send requests for MODEL to UPSTREAM (several routes: spread by weight, failing over)."""
    with open_backend(database_url, url, api_key) as backend:
        backend.add_route(model, upstream, upstream_model, weight)
    click.echo(f"added route {model} -> {upstream}" + (f" as {upstream_model}" if upstream_model else "")
               + f" (weight {weight})", err=True)


@routes.command("list")
@backend_options
@handle_errors
def list_routes(database_url: str | None, url: str | None, api_key: str | None) -> None:
    """Every route: a model's own, and each discovered model's to the upstream that listed it."""
    with open_backend(database_url, url, api_key) as backend:
        rows = backend.routes()
    table = [("MODEL", "UPSTREAM", "UPSTREAM MODEL", "WEIGHT")]
    table += [(r["model"], r["upstream"], r["upstream_model"],
               "discovered" if r.get("discovered") else str(r.get("weight", 1))) for r in rows]
    print_table(table)


@routes.command("remove")
@click.argument("model")
@click.argument("upstream")
@click.option("--upstream-model", metavar="ID", help="Only the route for this upstream model id.")
@backend_options
@handle_errors
def remove(model: str, upstream: str, upstream_model: str | None, database_url: str | None, url: str | None,
           api_key: str | None) -> None:
    """Stop sending requests for MODEL to UPSTREAM."""
    with open_backend(database_url, url, api_key) as backend:
        backend.remove_route(model, upstream, upstream_model)
    click.echo(f"removed route {model} -> {upstream}", err=True)
