"""The `modeldex` command."""

from __future__ import annotations

import click

from modeldex import __version__
from modeldex.cli.db import db
from modeldex.cli.keys import keys
from modeldex.cli.models import models
from modeldex.cli.serve import serve


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="modeldex")
def cli() -> None:
    """modeldex: an OpenAI-compatible model catalog.

    Every command reads the catalog from --database-url or MODELDEX_DATABASE_URL
    (default: a SQLite file in your per-user data directory).
    """


cli.add_command(serve)
cli.add_command(keys)
cli.add_command(models)
cli.add_command(db)


def main() -> None:
    cli()
