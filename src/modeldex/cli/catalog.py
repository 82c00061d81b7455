"""`modeldex catalog` and `modeldex changes`: the catalog as a YAML file, and what changed since when."""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path
from typing import Any, BinaryIO

import click

from modeldex.catalog.catalog_file import PlannedChange, dump_yaml, parse_catalog_file
from modeldex.catalog.errors import InvalidInput
from modeldex.cli.backend import Backend
from modeldex.cli.common import backend_options, handle_errors, open_backend, print_table


@click.group()
def catalog() -> None:
    """Export the catalog as YAML, or make the catalog match a YAML file."""


@catalog.command("export")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write to this file instead of stdout.")
@backend_options
@handle_errors
def export(output: str | None, database_url: str | None, url: str | None, api_key: str | None) -> None:
    """Write models, aliases, groups, upstreams and issuers (never keys, nor discovered models) as YAML."""
    with open_backend(database_url, url, api_key) as backend:
        text = dump_yaml(backend.export())
    if output:
        try:
            _write_whole(Path(output), text)
        except OSError as exc:
            raise click.ClickException(f"cannot write {click.format_filename(output)}: "
                                       f"{exc.strerror or type(exc).__name__}") from None
    else:
        click.echo(text, nl=False)


def _write_whole(path: Path, text: str) -> None:
    """Write `text` to `path` whole or not at all: a regular file (or a new one) is replaced by a finished copy
    made beside it, so a failed write (a full disk) never leaves a truncated export over the last good one,
    which `apply --prune` would then take for the catalog. Anything else (/dev/stdout, a pipe) is written
    to directly."""
    if path.exists() and not path.is_file():
        with path.open("w", encoding="utf-8") as handle:
            handle.write(text)
        return
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with partial.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            os.chmod(partial, path.stat().st_mode & 0o7777)  # the file keeps the mode it had
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _load(file: BinaryIO) -> Any:
    """The file's document; a file that is not UTF-8 YAML or JSON is one line naming it, where, and why."""
    name = "stdin" if file is sys.stdin.buffer or file.name == "<stdin>" else click.format_filename(file.name)
    data = file.read()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise click.ClickException(f"{name}: not UTF-8 text (byte {exc.start + 1} is 0x{data[exc.start]:02x}); "
                                   "a catalog file is YAML in UTF-8") from None
    try:
        return parse_catalog_file(data)  # JSON as JSON (YAML refuses some of JSON's escapes), else YAML
    except InvalidInput as exc:
        raise click.ClickException(f"{name}: {exc.message.removeprefix('file: ')}") from None


MAX_NAMED = 3  # removals a refusal names before "..."


def _confirm_prune(backend: Backend, document: Any, yes: bool, force: bool, can_ask: bool) -> str | None:
    """A prune that removes anything is shown and asked about on a terminal (`--yes` in scripts; without
    either it is refused); one that would leave no model at all also needs `--force`.

    Returns the plan shown (a dry run's digest) for the apply to insist on: a write made in between
    (another operator, a discovery poll) that changes what the file would do refuses the apply."""
    preview = backend.apply(document, True, True)
    planned = preview["changes"]
    removed = [c for c in planned if c["op"] == "delete"]
    if not removed:
        return None
    gone_models = {c["id"] for c in removed if c["entity"] == "model"}
    gone_upstreams = {c["id"] for c in removed if c["entity"] == "upstream"}
    left = [m for m in backend.entries("model") if m["id"] not in gone_models and m.get("source") not in gone_upstreams]
    added = [c for c in planned if c["op"] == "create" and c["entity"] == "model"]
    lines = [PlannedChange(c["op"], c["entity"], c["id"], tuple(c["fields"])).line() for c in removed]
    if not left and not added and not force:
        raise click.ClickException(f"refusing a prune that leaves the catalog without models ({len(removed)} "
                                   "removal(s)); pass --force if that is what you want")
    if yes:
        return None
    if not can_ask:
        named = ", ".join(line.removeprefix("- ") for line in lines[:MAX_NAMED])
        more = f", and {len(lines) - MAX_NAMED} more" if len(lines) > MAX_NAMED else ""
        raise click.ClickException(f"--prune would remove {len(removed)} entr{'y' if len(removed) == 1 else 'ies'} "
                                   f"({named}{more}); confirm with --yes (see all with --dry-run)")
    for line in lines:
        click.echo(line, err=True)
    click.confirm(f"remove {'this entry' if len(removed) == 1 else f'these {len(removed)} entries'}?",
                  abort=True, err=True)
    return str(preview["plan"])


@catalog.command("apply")
@click.argument("file", type=click.File("rb"))
@click.option("--prune", is_flag=True, help="Also remove what the file does not list (asked on a terminal).")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@click.option("-y", "--yes", is_flag=True, help="Prune without asking (scripts; without a terminal a prune "
              "that removes anything needs it).")
@click.option("--force", is_flag=True, help="Allow a prune that leaves no model in the catalog.")
@backend_options
@handle_errors
def apply(file: BinaryIO, prune: bool, dry_run: bool, yes: bool, force: bool, database_url: str | None,
          url: str | None, api_key: str | None) -> None:
    """Make the catalog match FILE (YAML; `-` reads stdin): all of it, or nothing if any entry is invalid."""
    document = _load(file)
    with open_backend(database_url, url, api_key) as backend:
        shown = None
        if prune and not dry_run:
            can_ask = file is not sys.stdin.buffer and sys.stdin.isatty()
            shown = _confirm_prune(backend, document, yes, force, can_ask)
        result = backend.apply(document, prune, dry_run, shown)
    for change in result["changes"]:
        click.echo(PlannedChange(change["op"], change["entity"], change["id"], tuple(change["fields"])).line())
    count = len(result["changes"])
    if dry_run:
        click.echo(f"dry run: {count} change(s) would be made; nothing was changed", err=True)
    elif count:
        click.echo(f"applied {count} change(s); catalog version {result['version']}", err=True)
    else:
        click.echo("nothing to change: the catalog already matches the file", err=True)


@click.command()
@click.option("--since", type=click.IntRange(min=0), default=0, show_default=True,
              help="Show changes after this version.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True,
              help="At most this many changes (1 to 10,000, as the admin API's change feed gives), in whole "
                   "versions: more only when one version alone has more.")
@backend_options
@handle_errors
def changes(since: int, limit: int, database_url: str | None, url: str | None, api_key: str | None) -> None:
    """The change feed: who changed what, at which catalog version."""
    with open_backend(database_url, url, api_key) as backend:
        feed = backend.changes(since, limit)
    rows = [("VERSION", "AT", "ACTOR", "CHANGE")]
    sign = {"create": "+", "update": "~", "delete": "-"}
    for c in feed["data"]:
        at = dt.datetime.fromtimestamp(c["at"], dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        rows.append((str(c["version"]), at, c["actor"], f"{sign[c['op']]} {c['entity']} {c['id']}"))
    print_table(rows)
    click.echo(f"catalog version {feed['version']}", err=True)
    if feed["has_more"] and feed["data"]:  # a page: say how to read on, as the admin API's has_more does
        click.echo(f"more changes: modeldex changes --since {feed['data'][-1]['version']}", err=True)


