"""The `modeldex` command."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from modeldex import __version__
from modeldex.cli.aliases import aliases
from modeldex.cli.auth import auth
from modeldex.cli.catalog import catalog, changes
from modeldex.cli.check import check
from modeldex.cli.common import GIVEN_BEFORE_THE_COMMAND, URL_ENV
from modeldex.cli.db import db
from modeldex.cli.groups import groups
from modeldex.cli.issuers import issuers
from modeldex.cli.keys import keys
from modeldex.cli.models import models
from modeldex.cli.routes import routes
from modeldex.cli.serve import serve
from modeldex.cli.upstreams import upstreams
from modeldex.config import DATABASE_URL_ENV

NO_ARGS_IS_HELP: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


def one_line(message: str) -> str:
    """An error message as one line: characters that would break it (a newline, a carriage return in an
    argument that click repeats) written as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


class OneLineErrorsGroup(click.Group):
    """click's own way of ending a run (an `Error:` line, status 1, or 2 for a usage error), with the error
    always on one line, whatever the arguments it quotes hold."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        for position, argument in enumerate(sys.argv[1:] if args is None else args, 1):
            try:
                argument.encode("utf-8")
            except UnicodeEncodeError:  # bytes in another encoding (Python keeps them as lone surrogates)
                click.echo(f"Error: argument {position} is not UTF-8 text", err=True)  # not repeated: a secret?
                sys.exit(2)
        try:
            status = super().main(args, prog_name, complete_var, False, **extra)
        except click.ClickException as exc:
            if not isinstance(exc, NO_ARGS_IS_HELP):  # that one's "message" is the help text
                exc.message = one_line(exc.message)  # type: ignore[misc]  # (Final in click's stubs)
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(status if isinstance(status, int) else 0)


@click.group(cls=OneLineErrorsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="modeldex")
@click.option("--database-url", metavar="URL", help="The database of every command (as each command's own "
              "--database-url, which wins).")
@click.option("--url", metavar="URL", help="The server of every command (as each command's own --url).")
def cli(database_url: str | None, url: str | None) -> None:
    """modeldex: an OpenAI-compatible model catalog.

    Commands work on the database named by --database-url or MODELDEX_DATABASE_URL
    (default: a SQLite file in your per-user data directory), or, with --url or
    MODELDEX_URL and an admin key (--api-key or MODELDEX_API_KEY), on a running
    server through its admin API. Both options go before or after the command.
    """
    if database_url is not None and url is not None:
        raise click.UsageError("give --url or --database-url, not both")
    # Handed to the command as the environment variables its own options read: its flag still wins. They
    # count as given on the command line, so they beat the environment's other one (backend_options).
    given = click.get_current_context().meta.setdefault(GIVEN_BEFORE_THE_COMMAND, set())
    if database_url is not None:
        os.environ[DATABASE_URL_ENV] = database_url
        given.add("database_url")
    if url is not None:
        os.environ[URL_ENV] = url
        given.add("url")


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
