"""Upstreams: OpenAI-compatible servers whose `/v1/models` the catalog learns models from.

An upstream is configuration, like a model or a group: it lives in the catalog, goes through the change
feed and catalog files. Its API key is never part of it: `api_key_env` names the environment variable
that holds the key in the processes that poll, so no database, file or log ever holds the key.

The rules for the models an upstream contributes ("discovered" models, with `source` set):
- operator-defined models (no `source`) always win: a sync never creates, changes or removes them, and
  adding or editing a model with a discovered id makes it the operator's;
- between upstreams, the first to list an id keeps it; the others report it as shadowed;
- a discovered model its upstream has not confirmed for `grace` seconds (the upstream fails, or answers
  without it) is removed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field

from modeldex.catalog.entities import Entity, Model, Name, Owner, Pattern
from modeldex.catalog.errors import Conflict
from modeldex.catalog.integrity import check_model_removal

if TYPE_CHECKING:
    from modeldex.catalog.repository import CatalogWriter

MIN_INTERVAL_S = 5
MAX_DURATION_S = 7 * 24 * 3600
MAX_TIMEOUT_S = 120
MAX_PREFIX_LENGTH = 64
_DURATION = re.compile(r"(\d+)\s*(s|m|h|d)?")
_UNITS = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_ENV_VAR = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")


def parse_duration(value: Any) -> int:
    """Seconds, from an integer or a string such as "90", "60s", "5m", "1h" (what `--interval` takes)."""
    if isinstance(value, bool):  # a ValueError, which pydantic reports as the field's problem
        raise ValueError("must be a duration such as 60s, 5m or 1h")  # noqa: TRY004
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        match = _DURATION.fullmatch(value.strip().lower())
        if match:
            return int(match.group(1)) * _UNITS[match.group(2)]
    raise ValueError("must be a duration such as 60s, 5m or 1h (or whole seconds)")


def _base_url(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL, e.g. http://10.0.0.5:8000/v1")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not contain credentials: name an environment variable in api_key_env")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or fragment")
    if not value.isprintable() or any(ch.isspace() for ch in value.strip()):
        raise ValueError("must not contain spaces or control characters")
    try:
        _ = parts.port  # urllib checks the port only when asked
    except ValueError:
        raise ValueError("has an invalid port") from None
    return value.strip().rstrip("/")


def _env_var(value: str) -> str:
    if not _ENV_VAR.fullmatch(value):
        raise ValueError("must be the NAME of an environment variable: upper-case letters, digits and '_', "
                         "not starting with a digit (the key itself is never stored)")
    return value


def _prefix(value: str) -> str:
    if not value or len(value) > MAX_PREFIX_LENGTH or not value.isprintable() or any(
            ch.isspace() or ch in "?#" for ch in value):
        raise ValueError(f"must be 1 to {MAX_PREFIX_LENGTH} printable characters without spaces, '?' or '#'")
    return value


PROTOCOLS = ("openai", "anthropic")


def _protocols(value: tuple[str, ...]) -> tuple[str, ...]:
    """Each entry `openai` or `anthropic`, optionally `=URL` where that protocol is served under another
    base URL than `base_url` (MiniMax: `anthropic=https://api.minimax.io/anthropic/v1`); normalized."""
    normalized: dict[str, str] = {}
    for entry in value:
        name, _, url = entry.strip().partition("=")
        name = name.strip().lower()
        if name not in PROTOCOLS:
            raise ValueError(f"{name!r} is not a protocol modeldex forwards: use {' or '.join(PROTOCOLS)}, "
                             "optionally with =BASE_URL")
        if name in normalized:
            raise ValueError(f"protocol {name!r} is named twice")
        normalized[name] = f"{name}={_base_url(url)}" if url.strip() else name
    return tuple(normalized[name] for name in PROTOCOLS if name in normalized)


BaseUrl = Annotated[str, AfterValidator(_base_url)]
Protocols = Annotated[tuple[str, ...], Field(min_length=1, max_length=len(PROTOCOLS)), AfterValidator(_protocols)]
EnvVar = Annotated[str, AfterValidator(_env_var)]
Prefix = Annotated[str, AfterValidator(_prefix)]
Interval = Annotated[int, BeforeValidator(parse_duration), Field(ge=MIN_INTERVAL_S, le=MAX_DURATION_S)]
Grace = Annotated[int, BeforeValidator(parse_duration), Field(ge=0, le=MAX_DURATION_S)]
Timeout = Annotated[int, BeforeValidator(parse_duration), Field(ge=1, le=MAX_TIMEOUT_S)]


def header_safe_key(raw: str | None) -> str | None:
    """An upstream's API key as its environment variable holds it, ready for a header: without surrounding
    whitespace (a Kubernetes secret made from a file often ends in a newline, which an HTTP header cannot
    carry), None when empty. ValueError when what is left is still not printable ASCII; the message never
    quotes the key. Discovery and the gateway read keys by this one rule."""
    key = raw.strip() if raw is not None else ""
    if not key:
        return None
    if not all("!" <= ch <= "~" for ch in key):
        raise ValueError("an API key with characters an HTTP header cannot carry (spaces, control or non-ASCII "
                         "characters)")
    return key


class Upstream(Entity):
    """An OpenAI-compatible server to learn models from. Durations are in seconds."""

    name: Name
    base_url: BaseUrl  # up to and including `/v1`: `{base_url}/models` is what is polled
    api_key_env: EnvVar | None = None
    prefix: Prefix | None = None
    include: tuple[Pattern, ...] = ()
    exclude: tuple[Pattern, ...] = ()
    interval: Interval = 60
    grace: Grace = 600
    timeout: Timeout = 10
    owned_by: Owner | None = None
    # Which APIs inference requests may be forwarded to it in (none given: OpenAI's, at `base_url`).
    protocols: Protocols | None = None
    routing_only: bool = False  # never polled: it serves models the operator routes to it

    def document(self) -> dict[str, Any]:
        document = super().document()
        if not self.routing_only:
            del document["routing_only"]  # the default, left out as unset fields are
        return document

    def endpoint(self, protocol: str) -> str | None:
        """The base URL (with `/v1`) at which it speaks `protocol`, or None when it does not."""
        if self.protocols is None:
            return self.base_url if protocol == "openai" else None
        for entry in self.protocols:
            name, _, url = entry.partition("=")
            if name == protocol:
                return url or self.base_url
        return None

    def yields(self, upstream_id: str) -> bool:
        """Whether the include/exclude globs (on the upstream's own id, before the prefix) let it in."""
        if self.include and not any(fnmatchcase(upstream_id, p) for p in self.include):
            return False
        return not any(fnmatchcase(upstream_id, p) for p in self.exclude)

    def catalog_id(self, upstream_id: str) -> str:
        return (self.prefix or "") + upstream_id

    def still_yields(self, catalog_id: str, before: Upstream) -> bool:
        """Whether a model this upstream discovered under the settings `before` would come from it, with the
        same id, under these (its upstream id is the catalog id without the prefix it had then)."""
        upstream_id = catalog_id.removeprefix(before.prefix or "")
        return self.catalog_id(upstream_id) == catalog_id and self.yields(upstream_id)


def discovered_by(writer: CatalogWriter, name: str) -> list[Model]:
    return [m for m in writer.all(Model) if m.source == name]


def remove_discovered(writer: CatalogWriter, upstream: Upstream, before: Upstream | None = None) -> list[str]:
    """Remove the models `upstream` discovered: all of them, or, given its settings `before` a change, those
    its new settings no longer yield (another prefix, narrower filters). In the write unit: removing or
    changing an upstream takes effect at once, not after the grace period."""
    removed = []
    for model in discovered_by(writer, upstream.name):
        if before is not None and upstream.still_yields(model.id, before):
            continue
        try:
            check_model_removal(writer, model.id)
        except Conflict as exc:
            raise Conflict(f"upstream {upstream.name!r} discovered {model.id!r}, and {exc}") from None
        writer.delete(Model, model.id)
        removed.append(model.id)
    return removed


def model_routes(model: Model, upstreams: Mapping[str, Upstream]) -> list[tuple[str, str, int | None]]:
    """Where inference for `model` goes, as (upstream, that upstream's id for it, weight): its routes, or,
    for a discovered model without any, the upstream that listed it (its id without that upstream's
    prefix; weight None). Empty when neither."""
    if model.routes:
        return [(route.upstream, route.model or model.id, route.weight) for route in model.routes]
    if model.source is not None:
        upstream = upstreams.get(model.source)
        prefix = (upstream.prefix or "") if upstream is not None else ""
        return [(model.source, model.id.removeprefix(prefix), None)]
    return []
