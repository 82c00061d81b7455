"""What every CLI command shares: the database option, opening the catalog, turning errors into messages."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import click
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from modeldex.catalog.errors import CatalogError, InvalidInput, StoreError
from modeldex.catalog.service import Catalog
from modeldex.cli.backend import Backend, HttpBackend, LocalBackend, open_cli_store, to_stderr
from modeldex.config import DATABASE_URL_ENV, is_default_database, resolve_database_url, sqlite_path
from modeldex.store.sql import DEFAULT_TIMEOUT_S, create_store_engine

F = TypeVar("F", bound=Callable[..., Any])

database_url_option = click.option(
    "--database-url",
    envvar=DATABASE_URL_ENV,
    show_envvar=True,
    help="SQLAlchemy URL of the catalog, e.g. sqlite:///path/catalog.db or postgresql://host/db. "
    "Default: catalog.db in the per-user data directory.",
)

SCHEMA_TIMEOUT_S = 3600.0


URL_ENV = "MODELDEX_URL"
url_option = click.option(
    "--url",
    envvar=URL_ENV,
    show_envvar=True,
    help="Work through a running server's admin API (e.g. http://127.0.0.1:8000) instead of the database.",
)
api_key_option = click.option(
    "--api-key",
    envvar="MODELDEX_API_KEY",
    show_envvar=True,
    help="An admin key, for --url. On a shared machine prefer the environment variable or --api-key-file: "
    "command lines are visible to every user (ps).",
)
api_key_file_option = click.option(
    "--api-key-file",
    envvar="MODELDEX_API_KEY_FILE",
    show_envvar=True,
    type=click.Path(dir_okay=False),
    help="Read the admin key for --url from this file (e.g. a mounted secret).",
)


def read_secret_file(path: str, option: str) -> str:
    """A secret kept in a file (a Kubernetes or Docker secret): its one line, without the line break
    such files usually end with. Errors name the file, never what it holds."""
    try:
        with open(path, encoding="utf-8") as handle:
            secret = handle.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {getattr(exc, 'strerror', None) or type(exc).__name__}",
                                 param_hint=option) from None
    if not secret or "\n" in secret or not secret.isprintable():
        raise click.BadParameter(f"{path} must hold one line: the secret", param_hint=option)
    return secret


def secret_option(value: str | None, file: str | None, option: str) -> str | None:
    """The secret given directly (flag or environment), or read from a file; not both."""
    if file is None:
        return value
    if value:
        raise click.UsageError(f"{option} and {option}-file are alternatives: give one")
    return read_secret_file(file, option + "-file")


# The names of --database-url and --url given before the command (the group's), in the root context's meta.
GIVEN_BEFORE_THE_COMMAND = "modeldex.given_before_the_command"


def backend_options(command: F) -> F:
    """--database-url, or --url with --api-key (or --api-key-file): the two places a command can work on."""

    @functools.wraps(command)
    def with_key_file(*args: Any, api_key_file: str | None = None, **kwargs: Any) -> Any:
        kwargs["api_key"] = secret_option(kwargs.get("api_key"), api_key_file, "--api-key")
        if kwargs.get("url") and kwargs.get("database_url"):
            # What the command line says wins over the environment (MODELDEX_URL set in a shell must not
            # send `--database-url other.db` writes to a server); both on the command line is a mistake,
            # before the command (`modeldex --database-url D ...`: the group's) or after it.
            context = click.get_current_context()
            from_line = {name for name in ("url", "database_url")
                         if context.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE}
            from_line |= context.find_root().meta.get(GIVEN_BEFORE_THE_COMMAND, set())
            if from_line == {"url", "database_url"}:
                raise click.UsageError("give --url or --database-url, not both")
            if from_line == {"database_url"}:
                kwargs["url"] = None
        return command(*args, **kwargs)

    return database_url_option(url_option(api_key_option(api_key_file_option(with_key_file))))  # type: ignore[return-value]


@contextmanager
def open_backend(database_url: str | None, url: str | None, api_key: str | None) -> Iterator[Backend]:
    backend: Backend = HttpBackend(url, api_key) if url else LocalBackend(database_url)
    try:
        yield backend
    finally:
        backend.close()


def redact(url: str) -> str:
    """A database URL as it may be printed: without its password (even in one SQLAlchemy cannot parse)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def fail(message: str) -> click.ClickException:
    """An error as one line: a driver's multi-line message (libpq's "Is the server running ...?") joined."""
    return click.ClickException(" ".join(line.strip() for line in message.strip().splitlines() if line.strip()))


def handle_errors(command: F) -> F:
    """Domain and storage errors become one clear line on stderr and exit status 1, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except InvalidInput as exc:
            raise fail(f"invalid {exc.message}") from None
        except (CatalogError, StoreError) as exc:
            raise fail(str(exc)) from None
        except SQLAlchemyError as exc:
            raise fail(f"database error: {getattr(exc, 'orig', None) or exc}") from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def open_catalog(database_url: str | None, say: Callable[[str], None] = to_stderr) -> Iterator[Catalog]:
    """The catalog at the given (or configured) URL, created and seeded on first use (said on stderr, or
    through `say`)."""
    store = open_cli_store(database_url, say)
    try:
        yield Catalog(store)
    finally:
        store.close()


@contextmanager
def open_engine(database_url: str | None, create: bool = False) -> Iterator[tuple[str, Engine]]:
    """A bare engine on the configured database, for schema commands that must not migrate or seed it.
    Its statements may run long: a migration can rewrite a big table. A SQLite file that does not exist is
    made only if `create` (and said on stderr)."""
    url = resolve_database_url(database_url)
    path = sqlite_path(url)
    if path is not None and not path.exists() and not create:
        raise fail(f"no database at {path}")
    engine = create_store_engine(url, timeout_s=SCHEMA_TIMEOUT_S, create_dirs=is_default_database(url),
                                 connect_timeout_s=DEFAULT_TIMEOUT_S)
    if path is not None and not path.exists():
        click.echo(f"modeldex: creating a new database at {path}", err=True)
    try:
        yield url, engine
    finally:
        engine.dispose()


def display_width(text: str) -> int:
    """The columns `text` takes on a terminal: two for a wide character (CJK, most emoji), none for a
    combining mark or a zero-width one, one for the rest."""
    width = 0
    for char in text:
        if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def print_table(rows: Sequence[tuple[str, ...]]) -> None:
    """Aligned columns on stdout, by the width each cell takes on a terminal (ids may be any Unicode
    text: `模型` takes four columns, not two); the first row is the header."""
    widths = [max(display_width(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell + " " * (width - display_width(cell))
                             for cell, width in zip(row, widths, strict=True)).rstrip())
