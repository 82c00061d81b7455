"""`modeldex upstreams`: the OpenAI-compatible servers the catalog learns models from."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from modeldex.cli.common import backend_options, handle_errors, open_backend, print_table

MAX_ERROR_SHOWN = 60
CLEARABLE = ("api_key_env", "prefix", "include", "exclude", "owned_by", "protocols")


def _settings_options(command: Any) -> Any:
    """The options `add` and `update` share; None (or an empty tuple) means "not given"."""
    options = [
        click.option("--api-key-env", metavar="VAR",
                     help="Environment variable holding the upstream's API key (read when polling; "
                     "never stored)."),
        click.option("--prefix", metavar="P", help="Put before each model id, e.g. 'vllm/'."),
        click.option("--include", multiple=True, metavar="GLOB",
                     help="Only the upstream's ids matching a glob (repeatable), e.g. 'llama-*'."),
        click.option("--exclude", multiple=True, metavar="GLOB",
                     help="Leave out ids matching a glob (repeatable)."),
        click.option("--interval", metavar="DURATION", help="How often to poll: 60s (default), 5m, 1h."),
        click.option("--grace", metavar="DURATION",
                     help="How long models stay (stale) once the upstream stops confirming them: "
                     "10m (default)."),
        click.option("--timeout", metavar="DURATION", help="Per attempt: 10s (default)."),
        click.option("--owned-by", metavar="O",
                     help="owned_by for its models (default: what the upstream says)."),
        click.option("--protocol", "protocols", multiple=True, metavar="openai|anthropic[=URL]",
                     help="An API inference requests may be forwarded to it in (repeatable; default: openai). "
                     "=URL where it serves that one under another base URL, e.g. "
                     "anthropic=https://api.minimax.io/anthropic/v1."),
        click.option("--routing-only/--polled", "routing_only", default=None,
                     help="Never poll it: it only serves the models routed to it (`modeldex routes add`)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _fields(options: dict[str, Any]) -> dict[str, Any]:
    fields = {k: v for k, v in options.items() if v is not None and k not in ("include", "exclude", "protocols")}
    for name in ("include", "exclude", "protocols"):
        if options.get(name):
            fields[name] = list(options[name])
    return fields


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _short(text: str) -> str:
    return text if len(text) <= MAX_ERROR_SHOWN else text[:MAX_ERROR_SHOWN - 3] + "..."


@click.group()
def upstreams() -> None:
    """Servers whose /v1/models the catalog learns models from: add, list, update, remove, sync-now."""


@upstreams.command("add")
@click.argument("name")
@click.option("--base-url", required=True, metavar="URL",
              help="The upstream's OpenAI base URL, with /v1: http://10.0.0.5:8000/v1.")
@_settings_options
@backend_options
@handle_errors
def add(name: str, base_url: str, database_url: str | None, url: str | None, api_key: str | None,
        **options: Any) -> None:
    """Add upstream NAME; running servers poll it within seconds, then every --interval."""
    with open_backend(database_url, url, api_key) as backend:
        upstream = backend.create("upstream", {"name": name, "base_url": base_url, **_fields(options)})
    if upstream.get("routing_only"):
        click.echo(f"added upstream {upstream['name']}: {upstream['base_url']}, routing only (never polled)",
                   err=True)
    else:
        click.echo(f"added upstream {upstream['name']}: {upstream['base_url']}, "
                   f"polled every {upstream['interval']}s (grace {upstream['grace']}s)", err=True)


@upstreams.command("update")
@click.argument("name")
@click.option("--base-url", metavar="URL", help="A new base URL.")
@_settings_options
@click.option("--clear", "cleared", multiple=True, type=click.Choice(CLEARABLE),
              help="Remove a setting (repeatable).")
@backend_options
@handle_errors
def update(name: str, base_url: str | None, cleared: tuple[str, ...], database_url: str | None,
           url: str | None, api_key: str | None, **options: Any) -> None:
    """Change upstream NAME; models its new settings exclude leave at once, the rest at the next poll."""
    fields = _fields({**options, "base_url": base_url})
    fields.update(dict.fromkeys(cleared))
    if not fields:
        raise click.UsageError("nothing to change: give at least one option")
    with open_backend(database_url, url, api_key) as backend:
        upstream = backend.update("upstream", name, fields, None)
    click.echo(f"updated upstream {upstream['name']} (revision {upstream['revision']})", err=True)


@upstreams.command("list")
@backend_options
@handle_errors
def list_upstreams(database_url: str | None, url: str | None, api_key: str | None) -> None:
    """Each upstream with its health: models it contributes, last success, last error, latency; through a
    server (--url), also how it has been answering inference requests (all of that server's workers)."""
    with open_backend(database_url, url, api_key) as backend:
        entries = backend.list_upstreams()
    inference = any("inference" in upstream["health"] for upstream in entries)  # a server's memory, not the database's
    rows: list[tuple[str, ...]] = [("NAME", "BASE_URL", "MODELS", "LAST SUCCESS", "LAST ERROR", "LATENCY",
                                    *(("INFERENCE",) if inference else ()))]
    for upstream in entries:
        health = upstream["health"]
        stale = health["status"] == "failing" and health["model_count"]
        models = str(health["model_count"]) + (" (stale)" if stale else "")
        error = "-"
        if health["last_error"]:
            error = f"{_when(health['last_error_at'])} {_short(health['last_error'])}"
        latency = f"{health['latency_ms']:.0f} ms" if health["latency_ms"] is not None else "-"
        rows.append((upstream["name"], upstream["base_url"], models, _when(health["last_success_at"]), error,
                     latency, *((_inference(health.get("inference") or {}),) if inference else ())))
    print_table(rows)


def _inference(state: dict[str, Any]) -> str:
    """`12 ok, 3 failed (resting: HTTP 502)`; `-` before any inference request went to it."""
    successes, errors = state.get("successes", 0), state.get("errors", 0)
    if not successes and not errors:
        return "-"
    text = f"{successes} ok, {errors} failed"
    if not state.get("healthy", True):
        text += f" (resting: {_short(str(state.get('last_error')))})"
    return text


@upstreams.command("remove")
@click.argument("name")
@backend_options
@handle_errors
def remove(name: str, database_url: str | None, url: str | None, api_key: str | None) -> None:
    """Remove upstream NAME and, at once, the models it contributed."""
    with open_backend(database_url, url, api_key) as backend:
        backend.delete("upstream", name)
    click.echo(f"removed upstream {name} and its models", err=True)


@upstreams.command("sync-now")
@click.argument("name")
@backend_options
@handle_errors
def sync_now(name: str, database_url: str | None, url: str | None, api_key: str | None) -> None:
    """Poll upstream NAME now and show what changed (with --url, the server polls it)."""
    with open_backend(database_url, url, api_key) as backend:
        result = backend.sync_upstream(name)
    for sign, key, note in (("+", "added", ""), ("~", "updated", ""), ("!", "stale", " (stale)"),
                            ("-", "removed", "")):
        for model_id in result[key]:
            click.echo(f"{sign} model {model_id}{note}")
    for entry in result["shadowed"]:  # not a change: a note on stderr
        click.echo(f"note: {entry['id']} is listed by {name} too; the {entry['by']}'s entry is kept",
                   err=True)
    version = f"; catalog version {result['version']}" if result["version"] is not None else "; no change"
    if not result["ok"]:
        raise click.ClickException(f"sync of {name} failed: {result['error']}; "
                                   f"{result['model_count']} models kept{version}")
    click.echo(f"synced {name}: {result['model_count']} models in {result['latency_ms']:.0f} ms{version}",
               err=True)
