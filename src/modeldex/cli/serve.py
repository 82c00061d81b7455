"""`modeldex serve`: run the HTTP server (granian) on the catalog."""

from __future__ import annotations

import os
import sys

import click

from modeldex.catalog.service import Catalog
from modeldex.cli.common import database_url_option, handle_errors, open_catalog, redact
from modeldex.config import ServerSettings, resolve_database_url
from modeldex.logs import logging_config

FIRST_KEY_NAME = "admin"


def _terminal() -> object | None:
    """The stream that is a terminal, if any: a first key may be shown there and nowhere else."""
    for stream in (sys.stderr, sys.stdout):
        if stream.isatty():
            return stream
    return None


def _first_key(catalog: Catalog, host: str, port: int) -> None:
    """On an empty key table, give the person at the terminal a key; a log file gets instructions only."""
    if catalog.has_active_keys():
        return
    terminal = _terminal()
    if terminal is None:
        click.echo(
            "modeldex: no API keys exist yet. Create one with:\n"
            f"  modeldex keys create {FIRST_KEY_NAME} --scope admin",
            err=True,
        )
        return
    _record, secret = catalog.create_key(FIRST_KEY_NAME, "admin")
    base = f"http://{host}:{port}"
    click.echo(
        "\n"
        f"  No API keys existed, so modeldex created an admin key named {FIRST_KEY_NAME!r}.\n"
        "  It is shown this once, here on your terminal, and stored only as a hash:\n\n"
        f"    {secret}\n\n"
        "  Try it:\n"
        f"    curl -H 'Authorization: Bearer {secret}' {base}/v1/models\n\n"
        "  More keys: modeldex keys create NAME [--scope read|admin]\n",
        file=terminal,  # type: ignore[arg-type]
    )


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to bind.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes; each serves from its own in-memory copy of the catalog.")
@click.option("--refresh-interval", default=0.2, show_default=True, type=click.FloatRange(0.01, 10),
              help="Seconds between checks for catalog changes made elsewhere (CLI, other workers).")
@click.option("--access-log/--no-access-log", default=True, show_default=True,
              help="One log line per request (request id, method, path, status, duration, key name).")
@click.option("--metadata/--no-metadata", default=False, show_default=True, envvar="MODELDEX_METADATA",
              help="Answer every model with its metadata (context_length, pricing, ...), not only on "
              "?expand=metadata.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@database_url_option
@handle_errors
def serve(host: str, port: int, workers: int, refresh_interval: float, access_log: bool, metadata: bool,
          log_level: str, database_url: str | None) -> None:
    """Serve the OpenAI-compatible Models API."""
    from granian import Granian
    from granian.constants import Interfaces

    url = resolve_database_url(database_url)
    with open_catalog(url) as catalog:  # creates, migrates-if-new and seeds before any worker starts
        _first_key(catalog, host, port)
        model_count = len(catalog.list_models())
    settings = ServerSettings(database_url=url, refresh_interval=refresh_interval, access_log=access_log,
                              metadata=metadata)
    os.environ.update(settings.to_env())
    click.echo(f"modeldex: {model_count} models from {redact(url)}; listening on http://{host}:{port}", err=True)
    server = Granian(
        "modeldex.api.app:create_app",
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        log_dictconfig=logging_config(log_level.upper()),
        log_level=log_level,  # type: ignore[arg-type]
    )
    server.serve()
