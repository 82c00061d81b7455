"""`modeldex models`: list, show, add, update and remove catalog entries."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click
import orjson

from modeldex.catalog.errors import CatalogError
from modeldex.cli.common import backend_options, handle_errors, open_backend, print_table

METADATA_OPTIONS = [
    click.option("--name", "display_name", help="Display name."),
    click.option("--description", help="A description."),
    click.option("--context-length", type=int, help="Context window, in tokens."),
    click.option("--max-output-tokens", type=int, help="Longest completion, in tokens."),
    click.option("--input-modalities", help="Comma list: text,image,audio,video,file."),
    click.option("--output-modalities", help="Comma list: text,image,audio,video,file,embeddings."),
    click.option("--prompt-price", help="Price per prompt token, a decimal (e.g. 0.0000003)."),
    click.option("--completion-price", help="Price per completion token, a decimal."),
    click.option("--shutdown-date", help="ISO date (or date-time, UTC) after which the model is no longer served."),
    click.option("--replaced-by", help="The id of the model that replaces this one."),
]


# The fields `update --clear` removes: the metadata (pricing: both prices), and the model's own routes.
CLEARABLE = ("name", "description", "context_length", "max_output_tokens", "input_modalities", "output_modalities",
             "pricing", "shutdown_date", "replaced_by", "routes")


def with_metadata_options(command: Any) -> Any:
    for option in reversed(METADATA_OPTIONS):
        command = option(command)
    return command


def metadata_fields(options: dict[str, Any]) -> dict[str, Any]:
    """The metadata the options set, in the admin API's field names."""
    fields: dict[str, Any] = {}
    simple = {"display_name": "name", "description": "description", "context_length": "context_length",
              "max_output_tokens": "max_output_tokens", "shutdown_date": "shutdown_date",
              "replaced_by": "replaced_by"}
    for option, field in simple.items():
        if options.get(option) is not None:
            fields[field] = options[option]
    for option in ("input_modalities", "output_modalities"):
        if options.get(option) is not None:
            fields[option] = [m.strip() for m in options[option].split(",") if m.strip()]
    pricing = {k: options[o] for k, o in (("prompt", "prompt_price"), ("completion", "completion_price"))
               if options.get(o) is not None}
    if pricing:
        fields["pricing"] = pricing
    return fields


def _created(timestamp: int) -> str:
    """`created` and its UTC day; the number alone past year 9999, which a date cannot show (the API
    accepts any timestamp below 2**53)."""
    try:
        return f"{timestamp} ({dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime('%Y-%m-%d')})"
    except (ValueError, OverflowError, OSError):
        return str(timestamp)


@click.group()
def models() -> None:
    """List, show, add, update and remove models."""


@models.command("list")
@backend_options
@handle_errors
def list_models(database_url: str | None, url: str | None, api_key: str | None) -> None:
    """List the catalog, newest first, as the API lists it (shut-down models included, marked)."""
    with open_backend(database_url, url, api_key) as backend:
        entries = sorted(backend.entries("model"), key=lambda m: (-m["created"], m["id"]))
    rows = [("ID", "OWNED_BY", "CREATED")]
    for m in entries:
        note = f"  shutdown {m['shutdown_date']}" if m.get("shutdown_date") else ""
        if m.get("source"):
            note += f"  from upstream {m['source']}" + (" (stale)" if m.get("stale_since") else "")
        rows.append((m["id"], m["owned_by"], f"{_created(m['created'])}{note}"))
    print_table(rows)


@models.command("show")
@click.argument("model_id", metavar="ID")
@backend_options
@handle_errors
def show(model_id: str, database_url: str | None, url: str | None, api_key: str | None) -> None:
    """Print one model, with its metadata and revision, as JSON (for an alias: its target, named on stderr)."""
    with open_backend(database_url, url, api_key) as backend:
        try:
            document = backend.get("model", model_id)
        except CatalogError as not_a_model:
            try:
                alias = backend.get("alias", model_id)
            except CatalogError:
                raise not_a_model from None
            hidden = " (hidden from lists)" if alias.get("hidden") else ""
            click.echo(f"{model_id} is an alias{hidden} of {alias['target']}:", err=True)
            document = backend.get("model", alias["target"])
    click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())


@models.command("add")
@click.argument("model_id", metavar="ID")
@click.option("--owned-by", default="system", show_default=True, help="The owned_by field.")
@click.option("--created", type=int, default=None, help="Unix timestamp (seconds). Default: now.")
@with_metadata_options
@backend_options
@handle_errors
def add(model_id: str, owned_by: str, created: int | None, database_url: str | None, url: str | None,
        api_key: str | None, **metadata: Any) -> None:
    """Add the model ID; running servers serve it within a second."""
    data: dict[str, Any] = {"id": model_id, "owned_by": owned_by, **metadata_fields(metadata)}
    if created is not None:
        data["created"] = created
    with open_backend(database_url, url, api_key) as backend:
        model = backend.create("model", data)
    click.echo(f"added {model['id']} (owned_by {model['owned_by']}, created {model['created']})", err=True)


@models.command("update")
@click.argument("model_id", metavar="ID")
@click.option("--owned-by", default=None, help="A new owned_by.")
@click.option("--created", type=int, default=None, help="A new Unix timestamp.")
@with_metadata_options
@click.option("--clear", "cleared", multiple=True, type=click.Choice(CLEARABLE), metavar="FIELD",
              help=f"Remove a field (repeatable): {', '.join(CLEARABLE)} (the model's own routes).")
@click.option("--if-revision", type=int, default=None, help="Only if the model is still at this revision.")
@backend_options
@handle_errors
def update(model_id: str, owned_by: str | None, created: int | None, cleared: tuple[str, ...],
           if_revision: int | None, database_url: str | None, url: str | None, api_key: str | None,
           **metadata: Any) -> None:
    """Change fields of the model ID."""
    fields: dict[str, Any] = metadata_fields(metadata)
    fields.update(dict.fromkeys(cleared))
    if owned_by is not None:
        fields["owned_by"] = owned_by
    if created is not None:
        fields["created"] = created
    if not fields:
        raise click.UsageError("nothing to change: give at least one option")
    with open_backend(database_url, url, api_key) as backend:
        model = backend.update("model", model_id, fields, if_revision)
    click.echo(f"updated {model['id']} (revision {model['revision']})", err=True)


@models.command("remove")
@click.argument("model_id", metavar="ID")
@backend_options
@handle_errors
def remove(model_id: str, database_url: str | None, url: str | None, api_key: str | None) -> None:
    """Remove the model ID."""
    with open_backend(database_url, url, api_key) as backend:
        backend.delete("model", model_id)
    click.echo(f"removed {model_id}", err=True)
