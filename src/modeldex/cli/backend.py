"""Where CLI commands send their work: straight to the database, or to a running server's admin API.

Both backends take and give plain documents (the admin API's JSON shapes), so every command is
written once and works either way.
"""

from __future__ import annotations

import getpass
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import quote

import click
import httpx
import orjson
from sqlalchemy.engine import make_url

from modeldex.catalog.catalog_file import plan_digest
from modeldex.catalog.errors import CatalogError
from modeldex.catalog.kinds import kind_named
from modeldex.catalog.repository import UNCHANGED
from modeldex.catalog.seed import seed_models
from modeldex.catalog.service import Catalog
from modeldex.catalog.upstreams import Upstream
from modeldex.config import is_default_database, resolve_database_url, sqlite_path
from modeldex.discovery.health import upstream_reports
from modeldex.discovery.sync import sync_now
from modeldex.identity.credentials import IssuerTokens
from modeldex.store import SqlStore, open_store

SYNC_TIMEOUT_S = 300  # a sync waits for a poll in progress, then polls: timeouts, retries and all


class BackendError(CatalogError):
    """An error the server answered, in its own words."""


class Backend(Protocol):
    def entries(self, kind: str) -> list[dict[str, Any]]: ...
    def get(self, kind: str, key: str) -> dict[str, Any]: ...
    def create(self, kind: str, data: dict[str, Any]) -> dict[str, Any]: ...
    def update(self, kind: str, key: str, fields: dict[str, Any], if_match: int | None) -> dict[str, Any]: ...
    def delete(self, kind: str, key: str) -> None: ...
    def list_keys(self, include_revoked: bool) -> list[dict[str, Any]]: ...
    def create_key(self, name: str, scope: str, policy: dict[str, Any] | None, rate_limit: str | None = None
                   ) -> tuple[dict[str, Any], str]: ...
    def update_key(self, name: str, scope: str | None, policy: dict[str, Any] | None,
                   rate_limit: str | None = None) -> dict[str, Any]: ...
    def revoke_key(self, name: str) -> None: ...
    def explain(self, name: str, model_id: str) -> dict[str, Any]: ...
    def changes(self, since: int, limit: int) -> dict[str, Any]: ...
    def export(self) -> dict[str, Any]: ...
    def apply(self, document: Any, prune: bool, dry_run: bool, expected_plan: str | None = None
              ) -> dict[str, Any]: ...
    def list_upstreams(self) -> list[dict[str, Any]]: ...
    def sync_upstream(self, name: str) -> dict[str, Any]: ...
    def routes(self) -> list[dict[str, Any]]: ...
    def add_route(self, model: str, upstream: str, upstream_model: str | None, weight: int) -> dict[str, Any]: ...
    def remove_route(self, model: str, upstream: str, upstream_model: str | None) -> dict[str, Any]: ...
    def explain_token(self, token: str) -> dict[str, Any]: ...
    def close(self) -> None: ...


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in this environment (some containers)
        return "cli"


def describe_database(url: str) -> str:
    """A database as a message names it: a SQLite file by its absolute path, others by URL (no password)."""
    path = sqlite_path(url)
    return str(path) if path is not None else make_url(url).render_as_string(hide_password=True)


def to_stderr(message: str) -> None:
    """How the command line says a note: a line on stderr (`serve --log-format json` says its notes as JSON)."""
    click.echo(message, err=True)


def open_cli_store(database_url: str | None, say: Callable[[str], None] = to_stderr) -> SqlStore:
    """The configured catalog, created and seeded on first use, which is said (on stderr) with the file's
    absolute path: a mistyped or relative path otherwise makes a second catalog without a word."""
    url = resolve_database_url(database_url)
    seed = seed_models()
    store = open_store(url, seed=seed, create_dirs=is_default_database(url))
    if store.seeded_now:
        say(f"modeldex: created a new catalog at {describe_database(url)} ({len(seed)} models)")
    return store


class LocalBackend:
    """The database itself: what `--database-url` / MODELDEX_DATABASE_URL name."""

    def __init__(self, database_url: str | None) -> None:
        self.store = open_cli_store(database_url)
        self.catalog = Catalog(self.store, actor=cli_actor())

    def entries(self, kind: str) -> list[dict[str, Any]]:
        return [{**entity.document(), "revision": revision} for entity, revision in self.catalog.entries(kind)]

    def get(self, kind: str, key: str) -> dict[str, Any]:
        entity, revision = self.catalog.get(kind, key)
        return {**entity.document(), "revision": revision}

    def create(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        entity, revision = self.catalog.create(kind, data)
        return {**entity.document(), "revision": revision}

    def update(self, kind: str, key: str, fields: dict[str, Any], if_match: int | None) -> dict[str, Any]:
        entity, revision = self.catalog.update(kind, key, fields, if_match)
        return {**entity.document(), "revision": revision}

    def delete(self, kind: str, key: str) -> None:
        self.catalog.delete(kind, key)

    def list_keys(self, include_revoked: bool) -> list[dict[str, Any]]:
        return [{**k.document(), "revision": k.revision} for k in self.catalog.list_keys(include_revoked)]

    def create_key(self, name: str, scope: str, policy: dict[str, Any] | None, rate_limit: str | None = None
                   ) -> tuple[dict[str, Any], str]:
        record, secret = self.catalog.create_key(name, scope, policy, rate_limit)
        return record.document(), secret

    def update_key(self, name: str, scope: str | None, policy: dict[str, Any] | None,
                   rate_limit: str | None = None) -> dict[str, Any]:
        return self.catalog.update_key(name, scope, policy,
                                       rate_limit=UNCHANGED if rate_limit is None else rate_limit).document()

    def revoke_key(self, name: str) -> None:
        self.catalog.revoke_key(name)

    def explain(self, name: str, model_id: str) -> dict[str, Any]:
        decision = self.catalog.explain(name, model_id)
        return {"key": name, "model": model_id, "visible": decision.visible, "rule": decision.rule}

    def changes(self, since: int, limit: int) -> dict[str, Any]:
        page = self.catalog.change_page(since, limit)
        return {"data": [c.document() for c in page.entries], "version": page.version, "has_more": page.has_more}

    def export(self) -> dict[str, Any]:
        return self.catalog.export()

    def apply(self, document: Any, prune: bool, dry_run: bool, expected_plan: str | None = None
              ) -> dict[str, Any]:
        version, planned = self.catalog.apply(document, prune=prune, dry_run=dry_run, expected_plan=expected_plan)
        return {"version": version, "dry_run": dry_run, "plan": plan_digest(planned),
                "changes": [p.document() for p in planned]}

    def list_upstreams(self) -> list[dict[str, Any]]:
        return upstream_reports(self.store.all_revisions(Upstream), self.store, time.time())

    def sync_upstream(self, name: str) -> dict[str, Any]:
        """Polls from this process: the upstream's key variable must be set here."""
        return sync_now(self.store, name).document()

    def routes(self) -> list[dict[str, Any]]:
        return self.catalog.routes()

    def add_route(self, model: str, upstream: str, upstream_model: str | None, weight: int) -> dict[str, Any]:
        entity, revision = self.catalog.add_route(model, upstream, upstream_model, weight)
        return {**entity.document(), "revision": revision}

    def remove_route(self, model: str, upstream: str, upstream_model: str | None) -> dict[str, Any]:
        entity, revision = self.catalog.remove_route(model, upstream, upstream_model)
        return {**entity.document(), "revision": revision}

    def explain_token(self, token: str) -> dict[str, Any]:
        """Checked here against the database's issuers, fetching their keys as a server would."""
        state = self.store.load_state()
        tokens = IssuerTokens(lambda: ({i.name: i for i in state.issuers}, {g.name for g in state.groups}))
        try:
            return tokens.explain(token)
        finally:
            tokens.close()

    def close(self) -> None:
        self.store.close()


def _segment(value: str, what: str) -> str:
    """A name or id as one segment of an admin API path, every character that means something in a URL
    (`/`, `?`, `#`, `%`) escaped. One with an empty, `.` or `..` path segment names nothing (ids and names
    cannot hold one) and is refused here: the URL it makes would be resolved (escaped or not) to another
    resource's, and `models remove x/../y --url`, `keys revoke ../models/y --url` removed the model y."""
    if any(part in ("", ".", "..") for part in value.split("/")):
        raise BackendError(f"{what} {value!r} does not exist: no name or id has an empty, '.' or '..' path segment")
    return quote(value, safe="")


class HttpBackend:
    """A running modeldex, through its admin API (`--url` / MODELDEX_URL, with an admin key)."""

    def __init__(self, url: str, api_key: str | None) -> None:
        if not api_key:
            raise BackendError("--url needs an admin key: pass --api-key or --api-key-file, or set MODELDEX_API_KEY")
        if not (api_key.isascii() and api_key.isprintable()):  # it goes in a header; never repeated here
            raise BackendError("the admin key holds characters no key has: it is printable ASCII")
        base = url.rstrip("/")
        if base.endswith("/v1"):  # the SDKs' base URL: the admin API's paths start with /v1 themselves
            base = base.removesuffix("/v1")
        try:
            parsed = httpx.URL(base)
        except httpx.InvalidURL:
            parsed = None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
            raise BackendError("--url must be a server's address, like http://127.0.0.1:8000")
        self.client = httpx.Client(base_url=parsed, headers={"Authorization": f"Bearer {api_key}"}, timeout=30)

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise BackendError(f"cannot reach {self.client.base_url}: {exc}") from None
        not_modeldex = (f"{response.request.url} answered HTTP {response.status_code} but not as modeldex's admin "
                        "API does: is --url the address of a modeldex server?")
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):  # a proxy's or another server's page, not ours
                raise BackendError(not_modeldex) from None
            raise BackendError(f"{message} (HTTP {response.status_code})")
        try:
            document = response.json()  # every admin answer is a JSON object
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise BackendError(not_modeldex)
        return document

    def _data(self, path: str, **kwargs: Any) -> list[dict[str, Any]]:
        data = self._call("GET", path, **kwargs).get("data")
        if not isinstance(data, list):
            raise BackendError(f"{self.client.base_url}{path} answered without a list of data: is --url the "
                               "address of a modeldex server?")
        return data

    @staticmethod
    def _path(kind: str, key: str | None = None) -> str:
        base = f"/v1/admin/{kind_named(kind).collection}"
        return base if key is None else f"{base}/{_segment(key, kind)}"

    def entries(self, kind: str) -> list[dict[str, Any]]:
        return self._data(self._path(kind))

    def get(self, kind: str, key: str) -> dict[str, Any]:
        return self._call("GET", self._path(kind, key))

    def create(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", self._path(kind), json=data)

    def update(self, kind: str, key: str, fields: dict[str, Any], if_match: int | None) -> dict[str, Any]:
        headers = {"If-Match": f'"{if_match}"'} if if_match is not None else {}
        return self._call("PATCH", self._path(kind, key), json=fields, headers=headers)

    def delete(self, kind: str, key: str) -> None:
        self._call("DELETE", self._path(kind, key))

    def list_keys(self, include_revoked: bool) -> list[dict[str, Any]]:
        return self._data("/v1/admin/keys", params={"all": "true"} if include_revoked else None)

    def create_key(self, name: str, scope: str, policy: dict[str, Any] | None, rate_limit: str | None = None
                   ) -> tuple[dict[str, Any], str]:
        body: dict[str, Any] = {"name": name, "scope": scope}
        if policy is not None:
            body["policy"] = policy
        if rate_limit is not None:
            body["rate_limit"] = rate_limit
        document = self._call("POST", "/v1/admin/keys", json=body)
        return document, document.pop("secret")

    def update_key(self, name: str, scope: str | None, policy: dict[str, Any] | None,
                   rate_limit: str | None = None) -> dict[str, Any]:
        body = {k: v for k, v in {"scope": scope, "policy": policy, "rate_limit": rate_limit}.items() if v is not None}
        return self._call("PATCH", f"/v1/admin/keys/{_segment(name, 'key')}", json=body)

    def revoke_key(self, name: str) -> None:
        self._call("DELETE", f"/v1/admin/keys/{_segment(name, 'key')}")

    def explain(self, name: str, model_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/admin/keys/{_segment(name, 'key')}/explain", params={"model": model_id})

    def changes(self, since: int, limit: int) -> dict[str, Any]:
        return self._call("GET", "/v1/admin/changes", params={"since": since, "limit": limit})

    def export(self) -> dict[str, Any]:
        return self._call("GET", "/v1/admin/catalog")

    def apply(self, document: Any, prune: bool, dry_run: bool, expected_plan: str | None = None
              ) -> dict[str, Any]:
        params = {"prune": str(prune).lower(), "dry_run": str(dry_run).lower()}
        if expected_plan is not None:
            params["expected_plan"] = expected_plan
        return self._call("POST", "/v1/admin/catalog/apply", params=params, content=orjson.dumps(document))

    def list_upstreams(self) -> list[dict[str, Any]]:
        return self._data("/v1/admin/upstreams")

    def sync_upstream(self, name: str) -> dict[str, Any]:
        """Polls in the server: its environment holds the upstream's key variable."""
        return self._call("POST", f"/v1/admin/upstreams/{_segment(name, 'upstream')}/sync", timeout=SYNC_TIMEOUT_S)

    def routes(self) -> list[dict[str, Any]]:
        return self._data("/v1/admin/routes")

    def add_route(self, model: str, upstream: str, upstream_model: str | None, weight: int) -> dict[str, Any]:
        body = {"model": model, "upstream": upstream, "upstream_model": upstream_model, "weight": weight}
        return self._call("POST", "/v1/admin/routes", json=body)

    def remove_route(self, model: str, upstream: str, upstream_model: str | None) -> dict[str, Any]:
        params = {"model": model, "upstream": upstream}
        if upstream_model is not None:
            params["upstream_model"] = upstream_model
        return self._call("DELETE", "/v1/admin/routes", params=params)

    def explain_token(self, token: str) -> dict[str, Any]:
        return self._call("POST", "/v1/admin/auth/explain", json={"token": token})

    def close(self) -> None:
        self.client.close()
