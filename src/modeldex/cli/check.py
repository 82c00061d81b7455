"""`modeldex check URL`: grade an OpenAI-compatible server (conformance/)."""

from __future__ import annotations

import json
import os
from urllib.parse import urlsplit

import click
import httpx

from modeldex.conformance import scorecard
from modeldex.conformance.probe import Probe, api_base


@click.command()
@click.argument("url")
@click.option("--api-key", envvar="MODELDEX_CHECK_API_KEY", default=None,
              help="The key to list and call with (or MODELDEX_CHECK_API_KEY; OPENAI_API_KEY when neither is set).")
@click.option("--model", default=None, help="The model to call for the chat checks (default: the first listed).")
@click.option("--writes", is_flag=True, help="Also check deleting a model (modeldex: a throwaway one it creates).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--timeout", default=15.0, show_default=True, type=click.FloatRange(0.1, 600),
              help="Seconds to wait for each answer.")
def check(url: str, api_key: str | None, model: str | None, writes: bool, as_json: bool, timeout: float) -> None:
    """Grade the OpenAI-compatible server at URL (with or without /v1): list and retrieve shapes, errors,
    headers, caching, and a chat completion where it routes inference. Read-only unless --writes.
    Exit status 1 if any check fails."""
    if not url.startswith(("http://", "https://")):
        raise click.BadParameter("give an http:// or https:// URL", param_hint="URL")
    try:
        parts = urlsplit(url)
        _ = parts.port  # urllib checks the port only when asked
        httpx.URL(api_base(url))
        if not parts.hostname:
            raise ValueError("no host")
    except (ValueError, httpx.InvalidURL) as exc:
        raise click.BadParameter(f"not a URL modeldex check can call ({exc})", param_hint="URL") from None
    key = api_key or os.environ.get("OPENAI_API_KEY")
    if key is not None and not (key.isascii() and key.isprintable()):  # it goes in a header; never repeated
        raise click.BadParameter("holds characters no API key has: keys are printable ASCII",
                                 param_hint="--api-key")
    probe = Probe(url, key, timeout=timeout)
    try:
        results = scorecard.run(probe, model=model, writes=writes)
    finally:
        probe.close()
    if as_json:
        click.echo(json.dumps(scorecard.document(results, probe.base), indent=2))
    else:
        click.echo(scorecard.text(results, probe.base))
    if scorecard.counts(results)["fail"]:
        raise SystemExit(1)
