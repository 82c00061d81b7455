"""The `modeldex` command."""

from __future__ import annotations

import click

from modeldex import __version__
from modeldex.cli.aliases import aliases
from modeldex.cli.auth import auth
from modeldex.cli.catalog import catalog, changes
from modeldex.cli.check import check
from modeldex.cli.db import db
from modeldex.cli.groups import groups
from modeldex.cli.issuers import issuers
from modeldex.cli.keys import keys
from modeldex.cli.models import models
from modeldex.cli.routes import routes
from modeldex.cli.serve import serve
from modeldex.cli.upstreams import upstreams


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="modeldex")
def cli() -> None:
    """modeldex: an OpenAI-compatible model catalog.

    Commands work on the database named by --database-url or MODELDEX_DATABASE_URL
    (default: a SQLite file in your per-user data directory), or, with --url or
    MODELDEX_URL and an admin key (--api-key or MODELDEX_API_KEY), on a running
    server through its admin API.
    """


cli.add_command(serve)
cli.add_command(keys)
cli.add_command(models)
cli.add_command(aliases)
cli.add_command(groups)
cli.add_command(upstreams)
cli.add_command(issuers)
cli.add_command(auth)
cli.add_command(routes)
cli.add_command(catalog)
cli.add_command(changes)
cli.add_command(db)
cli.add_command(check)


def main() -> None:
    cli()
