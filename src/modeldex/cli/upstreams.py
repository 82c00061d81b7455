"""`modeldex upstreams`: the OpenAI-compatible servers the catalog learns models from."""

from __future__ import annotations

import datetime as dt
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import click

from modeldex.cli.common import backend_options, handle_errors, open_backend, print_table

MAX_ERROR_SHOWN = 60
STALE_AFTER_INTERVALS = 2  # `upstreams list` calls health stale when no poll was tried for this many intervals
STALE_MARGIN_S = 60  # plus this (a poll's retries and timeouts)
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


PROBE_TIMEOUT_S = 2.0


def _unreachable(base_url: str) -> str | None:
    """Why a TCP connection to the upstream's host and port fails from here (None: it connects). A connection
    only, no request: an upstream's request counts and logs see nothing of it."""
    try:
        parsed = urlsplit(base_url)
        host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
    except ValueError as exc:
        return str(exc)
    if not host:
        return "no host in the URL"
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except socket.gaierror as exc:
        return f"cannot resolve {host}: {exc.strerror}"
    except TimeoutError:
        return f"no answer within {PROBE_TIMEOUT_S:.0f} s"
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


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
    problem = _unreachable(upstream["base_url"])
    if problem is not None:
        click.echo(f"warning: {upstream['base_url']} is not reachable from here ({problem}); added anyway: "
                   "`modeldex upstreams list` shows whether the server reaches it", err=True)


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
    # A list's empty value is [], which the entity keeps; null would mean "remove the field", which a
    # field with a default refuses ("cannot be removed").
    fields.update({field: [] if field in ("include", "exclude") else None for field in cleared})
    if not fields:
        raise click.UsageError("nothing to change: give at least one option")
    with open_backend(database_url, url, api_key) as backend:
        upstream = backend.update("upstream", name, fields, None)
    click.echo(f"updated upstream {upstream['name']} (revision {upstream['revision']})", err=True)


def _status(upstream: dict[str, Any], now: float) -> str:
    """One upstream's state at a glance: ok, failing since when, stale (nobody has polled it for over two
    intervals: no server running, or none with its key), not polled yet, or routing only."""
    health = upstream["health"]
    if upstream.get("routing_only"):
        return "routing only"
    if health["last_attempt_at"] is None:
        return "not polled yet"
    state = f"failing since {_when(health['failing_since'])}" if health["status"] == "failing" else "ok"
    if now - health["last_attempt_at"] > STALE_AFTER_INTERVALS * upstream["interval"] + STALE_MARGIN_S:
        state += f", stale: last polled {_when(health['last_attempt_at'])}"
    return state


@upstreams.command("list")
@backend_options
@handle_errors
def list_upstreams(database_url: str | None, url: str | None, api_key: str | None) -> None:
    """Each upstream with its health: models it contributes, status, last success, latency, the error while
    it is failing; through a server (--url), also how it has been answering inference requests (all of that
    server's workers)."""
    with open_backend(database_url, url, api_key) as backend:
        entries = backend.list_upstreams()
    now = time.time()
    inference = any("inference" in upstream["health"] for upstream in entries)  # a server's memory, not the database's
    rows: list[tuple[str, ...]] = [("NAME", "BASE_URL", "MODELS", "STATUS", "LAST SUCCESS", "LATENCY", "ERROR",
                                    *(("INFERENCE",) if inference else ()))]
    for upstream in entries:
        health = upstream["health"]
        failing = health["status"] == "failing"
        models = str(health["model_count"]) + (" (stale)" if failing and health["model_count"] else "")
        # The error of the failure going on; one a later poll has since cleared is history, not status.
        error = _short(health["last_error"]) if failing and health["last_error"] else "-"
        latency = f"{health['latency_ms']:.0f} ms" if health["latency_ms"] is not None else "-"
        rows.append((upstream["name"], upstream["base_url"], models, _status(upstream, now),
                     _when(health["last_success_at"]), latency, error,
                     *((_inference(health.get("inference") or {}),) if inference else ())))
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
