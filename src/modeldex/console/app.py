"""The console's routes, under /console on the API port, served by the Starlette side app.

Every page runs the same `Catalog` operations as the admin API, acting for the signed-in admin (the change
feed names them as it would their API calls). Every change is a POST form that carries the session's CSRF
token and must come from the console's own origin (`Origin`, `Sec-Fetch-Site`); the session cookie is
`SameSite=Strict` besides. Pages are Jinja2 templates with autoescaping on, so model ids and metadata are
text wherever they appear.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson
from jinja2 import Environment, PackageLoader
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route

from modeldex.catalog.callers import Caller
from modeldex.catalog.catalog_file import PlannedChange, dump_yaml, parse_catalog_file, plan_digest
from modeldex.catalog.entities import DISCOVERY_FIELDS, Alias, Model
from modeldex.catalog.errors import CatalogError, NotFound, PlanChanged, PreconditionFailed, StoreUnavailable
from modeldex.catalog.keys import KeyTable
from modeldex.catalog.policy import AccessPolicy
from modeldex.catalog.service import Catalog
from modeldex.catalog.upstreams import Upstream, model_routes
from modeldex.config import ServerSettings
from modeldex.console import views
from modeldex.console.sessions import COOKIE, SessionRecord, Sessions, SessionStore, csrf_matches
from modeldex.discovery.health import DiscoveryStore
from modeldex.discovery.sync import sync_now
from modeldex.gateway.downstream import BodyRefused, declared_length, read_chunks
from modeldex.ops.traffic import TrafficReport

log = logging.getLogger("modeldex.console")
PREFIX = "/console"
MAX_FORM_BYTES = 8 * 1024 * 1024  # a catalog file pasted for preview, with room to spare
_STATIC = Path(__file__).with_name("static")
_STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
_SECURITY_HEADERS = {
    "cache-control": "no-store",
    # Scripts and styles from the console's own files only: an id that slipped past escaping still runs nothing.
    "content-security-policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}
_FORM_PLUMBING = {"csrf", "revision", "digest", "action", "next"}  # hidden fields, not typed in
# Messages shown after a change and a redirect, by code: the address never carries text to display.
DONE = {
    "created": "Created.", "saved": "Saved.", "deleted": "Deleted.", "revoked": "Key revoked.",
    "key-saved": "Key saved.", "signed-out": "Signed out.",
}


class SignInRefused(Exception):
    """The credential was not accepted; the message says why (never the credential), `status` and `headers`
    are the API's for it (429 and Retry-After once the address used up its failed attempts)."""

    def __init__(self, message: str, status: int = 401, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers


class RateLimited(Exception):
    """The signed-in key used up its rate limit; the message says when to try again."""


Authenticate = Callable[[str, str], Awaitable[Caller]]
Charge = Callable[[Caller], Awaitable[None]]  # counts a request against the caller's limit, or raises RateLimited


class Served(Protocol):
    """What the console reads of the catalog version being served (api/render.py's RenderedCatalog)."""

    @property
    def keys(self) -> KeyTable: ...

    @property
    def models(self) -> Mapping[str, Model]: ...

    @property
    def aliases(self) -> Mapping[str, Alias]: ...

    @property
    def upstreams(self) -> Mapping[str, Upstream]: ...

    @property
    def issuers(self) -> Mapping[str, Any]: ...

    def view(self, policy: AccessPolicy) -> Any:
        """The Models API's list for `policy` (its `bodies`: id -> answer, in list order)."""
        ...


class Live(Protocol):
    @property
    def current(self) -> Served: ...


class ConsoleStore(SessionStore, DiscoveryStore, Protocol):
    """The store as the server uses it: the catalog, upstream health and polls, and console sessions
    (store/sql.py's SqlStore is one)."""


@dataclass
class Context:
    """One signed-in request: its session, the caller it acts as, the catalog acting for it, its form."""

    record: SessionRecord
    caller: Caller
    catalog: Catalog
    form: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request, Context], Awaitable[Response]]


class Console:
    def __init__(self, live: Live, authenticate: Authenticate, catalog_for: Callable[[Caller], Catalog],
                 store: ConsoleStore, tls: bool = False,
                 gateway_health: Callable[[], dict[str, dict[str, object]]] | None = None,
                 traffic: Callable[[], TrafficReport] | None = None, charge: Charge | None = None) -> None:
        self.live = live
        self.authenticate = authenticate
        self.catalog_for = catalog_for
        self.store = store
        self.sessions = Sessions(store)
        self.tls = tls
        self.gateway_health = gateway_health
        self.traffic = traffic
        self.charge = charge
        self.indexes = views.IndexCache()
        self.templates = Environment(loader=PackageLoader("modeldex.console", "templates"), autoescape=True,
                                     trim_blocks=True, lstrip_blocks=True)
        self.templates.filters["when"] = views.when
        self.templates.filters["pretty"] = views.pretty
        self.static = {path.name: path.read_bytes() for path in _STATIC.iterdir() if path.suffix in _STATIC_TYPES}
        self._table: list[Route] = []  # the pages' routes (routes() makes them), for not_found's 405s

    # --- plumbing: pages, sessions, forms ---------------------------------------------------------------

    def page(self, request: Request, template: str, status: int = 200, context: Context | None = None,
             **values: Any) -> Response:
        done = request.query_params.get("done", "")
        html = self.templates.get_template(template).render(
            signed_in=context.caller.name if context else None, csrf=context.record.csrf if context else "",
            done=DONE.get(done), path=request.url.path, **values)
        return Response(html, status_code=status, media_type="text/html; charset=utf-8", headers=_SECURITY_HEADERS)

    def problem(self, request: Request, status: int, message: str, context: Context | None = None,
                kept: list[tuple[str, str]] | None = None, back: str | None = None) -> Response:
        return self.page(request, "problem.html", status, context, message=message, kept=kept or [], back=back)

    @staticmethod
    def unsent(request: Request, form: Mapping[str, str] | None) -> dict[str, Any]:
        """For a form refused before it was looked at (its session ended, the rate limit, or a page from an older
        session): what was typed in it, to show back so that it is not lost, and the console page it was sent from (its
        `Referer`, same-origin only), to go back to after signing in."""
        kept = [(name, value) for name, value in (form or {}).items()
                if name not in _FORM_PLUMBING and value.strip()]
        referer = urlsplit(request.headers.get("referer", ""))
        same_site = referer.netloc == request.headers.get("host") and referer.scheme in ("http", "https")
        back = _safe_next(referer.path + (f"?{referer.query}" if referer.query else "")) if same_site else None
        return {"kept": kept, "back": back}

    @staticmethod
    def redirect(location: str, headers: dict[str, str] | None = None) -> Response:
        return Response(status_code=303, headers={"location": location, **_SECURITY_HEADERS, **(headers or {})})

    def _cookie(self, request: Request, value: str, clear: bool = False) -> str:
        parts = [f"{COOKIE}={value}", f"Path={PREFIX}", "HttpOnly", "SameSite=Strict"]
        if self.tls or request.url.scheme == "https":
            parts.append("Secure")
        if clear:
            parts.append("Max-Age=0")
        return "; ".join(parts)

    async def _session(self, request: Request) -> tuple[SessionRecord, Caller] | None:
        secret = request.cookies.get(COOKIE)
        if not secret:
            return None
        found = await run_in_threadpool(self.sessions.find, secret, self.live.current.keys)
        if found is None:
            return None
        record, caller = found
        if isinstance(caller, str):  # a token's session: resolved as every request with the token is
            try:
                caller = await self.authenticate(caller, request.scope.get("modeldex.client", "unknown"))
            except SignInRefused:
                return None
            if not caller.is_admin:
                return None
        return record, caller

    @staticmethod
    def cross_site(request: Request) -> str | None:
        """Why a state-changing request is not from the console's own pages, or None when it is."""
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return f"a request from another site ({site}) cannot change anything here"
        origin = request.headers.get("origin")
        if origin is not None:
            host = request.headers.get("host", "")
            if origin not in (f"http://{host}", f"https://{host}"):
                return "a request from another origin cannot change anything here"
        return None

    @staticmethod
    def form_limit(request: Request) -> int:
        return min(MAX_FORM_BYTES, getattr(request.app.state, "max_body_bytes", MAX_FORM_BYTES))

    async def form(self, request: Request) -> dict[str, str] | None:
        """The posted form (URL-encoded), or None when it is too large, cut short (shorter than its
        Content-Length: the client stopped sending) or stalled (`read_chunks`)."""
        idle_timeout = getattr(request.app.state, "body_timeout", ServerSettings.body_timeout)
        try:
            body = await read_chunks(request.stream(), self.form_limit(request),
                                     declared_length(request.headers.get("content-length")), idle_timeout)
        except BodyRefused:
            return None
        return dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))

    def signed_in(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """A page for a signed-in admin: GETs without a session go to the sign-in page; POSTs must carry
        the session's CSRF token and come from this origin. Domain errors are shown in words."""

        async def endpoint(request: Request) -> Response:
            found = await self._session(request)
            posted = request.method == "POST"
            if found is None:
                if not posted:
                    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    return self.redirect(f"{PREFIX}/sign-in?" + urlencode({"next": target}))
                form = await self.form(request) if self.cross_site(request) is None else None
                return self.problem(request, 401, "Your session has ended (signed out, expired, or its key was "
                                    "revoked): nothing was changed. Sign in again.", **self.unsent(request, form))
            record, caller = found
            request.scope["modeldex.key"] = caller.name
            context = Context(record, caller, self.catalog_for(caller))
            if self.charge is not None:  # a page is a request of the signed-in key, as an admin API call is
                try:
                    await self.charge(caller)
                except RateLimited as exc:
                    form = await self.form(request) if posted and self.cross_site(request) is None else None
                    return self.problem(request, 429, str(exc), context, **self.unsent(request, form))
            if posted:
                refused = self.cross_site(request)
                if refused is not None:
                    return self.problem(request, 403, f"Refused: {refused}.", context)
                form = await self.form(request)
                if form is None:
                    return self.problem(request, 413, "The form is larger than the server takes "
                                        f"({self.form_limit(request):,} bytes, "
                                        "serve --max-body-bytes); apply a file that large with `modeldex catalog "
                                        "apply`.", context)
                if not csrf_matches(record, form.get("csrf")):  # a page from before a sign-out and a new sign-in
                    return self.problem(request, 403, "Refused: the form did not carry this session's security "
                                        "token (CSRF): nothing was changed. Open the page again (reloading this "
                                        "one sends the same form) and try again.", context,
                                        **self.unsent(request, form))
                context.form = form
            try:
                return await handler(request, context)
            except NotFound as exc:
                return self.problem(request, 404, f"Not found: {exc}.", context)
            except StoreUnavailable:
                return self.problem(request, 503, "The catalog database is unreachable; try again shortly.",
                                    context)
            except CatalogError as exc:
                return self.problem(request, 400, str(exc), context)
            except Exception:
                request_id = request.scope.get("modeldex.request_id", "unknown")
                log.exception("console page failed in request %s", request_id)
                return self.problem(request, 500, f"Something went wrong on the server (request {request_id}); "
                                    "the server's log has the details.", context)

        return endpoint

    # --- sign-in, sign-out ------------------------------------------------------------------------------

    async def sign_in_page(self, request: Request) -> Response:
        target = _safe_next(request.query_params.get("next"))
        if await self._session(request) is not None:  # signed in meanwhile (in another tab): on to the page
            return self.redirect(target)
        return self.page(request, "sign_in.html", next=target)

    async def sign_in(self, request: Request) -> Response:
        form = await self.form(request) or {}
        target = _safe_next(form.get("next"))
        refused = self.cross_site(request)
        if refused is not None:
            return self.page(request, "sign_in.html", 403, error=f"Refused: {refused}.", next=target)
        token = form.get("key", "").strip()
        if not token:
            return self.page(request, "sign_in.html", 400, error="Enter an admin API key.", next=target)
        try:
            caller = await self.authenticate(token, request.scope.get("modeldex.client", "unknown"))
        except SignInRefused as exc:
            page = self.page(request, "sign_in.html", exc.status, error=f"Not signed in: {exc}", next=target)
            page.headers.update(dict(exc.headers))
            return page
        request.scope["modeldex.key"] = caller.name
        if not caller.is_admin:
            return self.page(request, "sign_in.html", 403, next=target,
                             error=f"Not signed in: {caller.name} is a read key; the console needs an admin key.")
        await run_in_threadpool(self.sessions.end, request.cookies.get(COOKIE))  # the one this replaces, if any
        secret, _record = await run_in_threadpool(self.sessions.start, caller, token)
        return self.redirect(target, {"set-cookie": self._cookie(request, secret)})

    async def sign_out(self, request: Request, context: Context) -> Response:
        await run_in_threadpool(self.sessions.end, request.cookies.get(COOKIE))
        return self.redirect(f"{PREFIX}/sign-in?done=signed-out", {"set-cookie": self._cookie(request, "", clear=True)})

    # --- models -----------------------------------------------------------------------------------------

    async def models(self, request: Request, context: Context) -> Response:
        query = request.query_params
        wanted = views.ModelFilter(**{name: query.get(name, "").strip() for name in
                                      ("q", "owner", "source", "stale", "alias")})
        served = self.live.current
        index = await run_in_threadpool(self.indexes.get, served)
        found = await run_in_threadpool(index.search, wanted)
        page = views.page_of(found, views.page_number(query.get("page")))
        rows = [(model_id, index.models[model_id], index.aliases_of.get(model_id, ())) for model_id in page.items]
        links = _page_links(request, page)
        return self.page(request, "models.html", context=context, rows=rows, page=page, wanted=wanted,
                         links=links, upstreams=sorted(served.upstreams), owners=index.owners[:500])

    async def model(self, request: Request, context: Context, error: str | None = None, status: int = 200,
                    text: str | None = None, model_id: str | None = None, edited: int | None = None) -> Response:
        """A model's page; after a refused edit, the form keeps the text and the revision it was sent with
        (`edited`), so saving it again cannot overwrite the change that made it stale."""
        model_id = model_id if model_id is not None else request.query_params.get("id", "")
        entity, revision = await run_in_threadpool(context.catalog.get, "model", model_id)
        assert isinstance(entity, Model)
        document = entity.document()
        editable = {k: v for k, v in document.items() if k not in ("id", *DISCOVERY_FIELDS)}
        served = self.live.current
        aliases = sorted(a.id for a in served.aliases.values() if a.target == model_id)
        history = await run_in_threadpool(context.catalog.history, 20, None, "model", model_id)
        gateway = self.gateway_health() if self.gateway_health is not None else {}
        return self.page(request, "model.html", status, context, model=entity, revision=revision,
                         form_revision=edited if edited is not None else revision,
                         document=document, fields_text=text if text is not None else views.pretty(editable),
                         aliases=aliases, routes=_routes(entity, served.upstreams), gateway=gateway,
                         history=[(c, views.field_changes(c.before, c.after)) for c in history], error=error)

    async def edit_model(self, request: Request, context: Context) -> Response:
        form = context.form
        model_id, text = form.get("id", ""), form.get("fields", "")
        fields = _json_object(text)
        if isinstance(fields, str):
            return await self.model(request, context, fields, 400, text, model_id)
        try:
            current, _ = await run_in_threadpool(context.catalog.get, "model", model_id)
            kept = {k for k in current.document() if k not in ("id", *DISCOVERY_FIELDS)}
            changes = {**dict.fromkeys(kept - fields.keys()), **fields}  # a field left out is removed
            await run_in_threadpool(context.catalog.update, "model", model_id, changes, _revision(form))
        except PreconditionFailed as exc:
            return await self.model(request, context, f"Not saved: {exc}. Someone else saved this model after you "
                                    "opened this page (its metadata above is theirs): open it again to edit it "
                                    "(reloading this page only sends your form again).", 409,
                                    text, model_id, _revision(form))
        except NotFound:
            raise
        except CatalogError as exc:
            return await self.model(request, context, f"Not saved: {exc}", 400, text, model_id)
        return self.redirect(f"{PREFIX}/model?" + urlencode({"id": model_id, "done": "saved"}))

    async def delete_model(self, request: Request, context: Context) -> Response:
        await run_in_threadpool(context.catalog.delete, "model", context.form.get("id", ""), _revision(context.form))
        return self.redirect(f"{PREFIX}/models?done=deleted")

    async def new_model_page(self, request: Request, context: Context) -> Response:
        return self.page(request, "model_new.html", context=context, values={"fields": "{}"})

    async def create_model(self, request: Request, context: Context) -> Response:
        form = context.form
        fields = _json_object(form.get("fields", "") or "{}")
        error = fields if isinstance(fields, str) else None
        if not isinstance(fields, str):
            data = {**fields, "id": form.get("id", "").strip()}
            if form.get("owned_by", "").strip():
                data["owned_by"] = form["owned_by"].strip()
            try:
                entity, _ = await run_in_threadpool(context.catalog.create, "model", data)
            except CatalogError as exc:
                error = f"Not created: {exc}"
            else:
                return self.redirect(f"{PREFIX}/model?" + urlencode({"id": entity.document()["id"], "done": "created"}))
        return self.page(request, "model_new.html", 400, context, values=form, error=error)

    # --- keys -------------------------------------------------------------------------------------------

    async def keys(self, request: Request, context: Context, error: str | None = None, status: int = 200,
                   values: Mapping[str, str] | None = None) -> Response:
        show_all = request.query_params.get("all") == "1"
        keys = await run_in_threadpool(context.catalog.list_keys, show_all)
        return self.page(request, "keys.html", status, context, keys=keys, show_all=show_all, error=error,
                         values=values or {"scope": "read", "policy": ""})

    async def create_key(self, request: Request, context: Context) -> Response:
        form = context.form
        policy = _json_object(form["policy"]) if form.get("policy", "").strip() else None
        if isinstance(policy, str):
            return await self.keys(request, context, f"Not created: policy: {policy}", 400, form)
        try:
            record, secret = await run_in_threadpool(
                context.catalog.create_key, form.get("name", "").strip(), form.get("scope", "read"), policy,
                form.get("rate_limit", "").strip() or None)
        except CatalogError as exc:
            return await self.keys(request, context, f"Not created: {exc}", 400, form)
        # The secret is in this answer only (no-store); reloading the page does not show it again.
        return self.page(request, "key_created.html", 201, context, key=record, secret=secret)

    async def revoke_key(self, request: Request, context: Context) -> Response:
        await run_in_threadpool(context.catalog.revoke_key, context.form.get("name", ""), _revision(context.form))
        return self.redirect(f"{PREFIX}/keys?done=revoked")

    async def key(self, request: Request, context: Context, error: str | None = None, status: int = 200,
                  values: Mapping[str, str] | None = None, name: str | None = None) -> Response:
        query = request.query_params
        name = name if name is not None else query.get("name", "")
        key = await run_in_threadpool(context.catalog.get_key, name)
        served = self.live.current
        visible = list(served.view(key.policy).bodies)  # what the Models API lists for this key, in its order
        q = query.get("q", "").strip().lower()
        if q:
            visible = [model_id for model_id in visible if q in model_id.lower()]
        page = views.page_of(visible, views.page_number(query.get("page")))
        explained = None
        if query.get("model"):
            decision = await run_in_threadpool(context.catalog.explain, name, query["model"])
            explained = (query["model"], decision.visible, decision.rule)
        defaults = {"scope": key.scope.value, "rate_limit": key.rate_limit or "",
                    "policy": views.pretty(key.policy.document())}
        history = await run_in_threadpool(context.catalog.history, 10, None, "key", name)
        return self.page(request, "key.html", status, context, key=key, page=page, q=query.get("q", ""),
                         links=_page_links(request, page), explained=explained, values=values or defaults,
                         error=error, history=[(c, views.field_changes(c.before, c.after)) for c in history])

    async def update_key(self, request: Request, context: Context) -> Response:
        form = context.form
        name = form.get("name", "")
        policy = _json_object(form.get("policy", "") or "{}")
        if isinstance(policy, str):
            return await self.key(request, context, f"Not saved: policy: {policy}", 400, form, name)
        try:
            await run_in_threadpool(context.catalog.update_key, name, form.get("scope") or None, policy,
                                    _revision(form), form.get("rate_limit", "").strip() or None)
        except PreconditionFailed as exc:
            return await self.key(request, context, f"Not saved: {exc}. Open the key again to see the change "
                                  "(reloading this page only sends your form again).", 409, form, name)
        except NotFound:
            raise
        except CatalogError as exc:
            return await self.key(request, context, f"Not saved: {exc}", 400, form, name)
        return self.redirect(f"{PREFIX}/key?" + urlencode({"name": name, "done": "key-saved"}))

    # --- upstreams --------------------------------------------------------------------------------------

    async def upstreams(self, request: Request, context: Context, result: dict[str, Any] | None = None,
                        error: str | None = None, status: int = 200) -> Response:
        now = time.time()
        entries = await run_in_threadpool(context.catalog.entries, "upstream")
        health = await run_in_threadpool(self.store.upstream_health, now)
        index = await run_in_threadpool(self.indexes.get, self.live.current)
        provided = index.sources
        gateway = self.gateway_health() if self.gateway_health is not None else {}
        rows = []
        for upstream, revision in sorted(entries, key=lambda pair: pair[0].document()["name"]):
            name = upstream.document()["name"]
            report = health.get(name)
            rows.append({"upstream": upstream.document(), "revision": revision, "health": report,
                         "models": provided.get(name, 0), "gateway": gateway.get(name),
                         "chart": views.latency_chart(report.latency_history) if report else ""})
        return self.page(request, "upstreams.html", status, context, rows=rows, now=now, result=result,
                         error=error)

    async def poll(self, request: Request, context: Context) -> Response:
        name = context.form.get("name", "")
        try:
            result = await run_in_threadpool(sync_now, self.store, name)
        except NotFound:
            raise
        except CatalogError as exc:  # another process is polling it
            return await self.upstreams(request, context, error=f"Not polled: {exc}", status=409)
        await run_in_threadpool(context.catalog.written_elsewhere)
        return await self.upstreams(request, context, result=result.document())

    # --- traffic ------------------------------------------------------------------------------------------

    async def traffic_page(self, request: Request, context: Context) -> Response:
        figures = await run_in_threadpool(self.traffic) if self.traffic is not None else TrafficReport()

        def top(table: Mapping[str, Any]) -> list[tuple[str, Any]]:
            return sorted(table.items(), key=lambda item: (-item[1].requests, item[0]))[:100]

        return self.page(request, "traffic.html", context=context, figures=figures, models=top(figures.by_model),
                         keys=top(figures.by_key), chart=views.traffic_chart(figures.per_minute))

    # --- changes, catalog files -------------------------------------------------------------------------

    async def changes(self, request: Request, context: Context) -> Response:
        """The feed, newest first, 50 entries a page; the next page starts below the oldest version shown (the
        rest of a version with more entries than a page holds, a large file applied, is left out, and said)."""
        before = _natural(request.query_params.get("before"))
        entries = await run_in_threadpool(context.catalog.history, 51, before)
        version = await run_in_threadpool(context.catalog.version)
        older = entries[49].version if len(entries) > 50 and entries[49].version > 1 else None
        cut = entries[49].version if len(entries) > 50 and entries[50].version == entries[49].version else None
        shown = [(c, views.field_changes(c.before, c.after)) for c in entries[:50]]
        return self.page(request, "changes.html", context=context, entries=shown, version=version, older=older,
                         cut=cut)

    async def export(self, request: Request, context: Context) -> Response:
        text = await run_in_threadpool(lambda: dump_yaml(context.catalog.export()))
        return Response(text, media_type="application/yaml", headers={
            **_SECURITY_HEADERS, "content-disposition": 'attachment; filename="catalog.yaml"'})

    async def apply_page(self, request: Request, context: Context) -> Response:
        return self.page(request, "apply.html", context=context, text="", prune=False)

    async def apply(self, request: Request, context: Context) -> Response:
        """Preview (a dry run) or apply a catalog file. Applying insists on the plan the preview showed
        (`Catalog.apply`'s `expected_plan`, checked in the same write): if the catalog changed meanwhile so
        that the file would now do something else, nothing is applied and the new plan is shown."""
        form = context.form
        text, prune = form.get("file", ""), form.get("prune") == "yes"
        if not text.strip():
            return self.page(request, "apply.html", 400, context, text=text, prune=prune,
                             error="Paste a catalog file first ({} for an empty one).")

        def plan(dry_run: bool, expected: str | None = None) -> tuple[int, list[PlannedChange]]:
            return context.catalog.apply(parse_catalog_file(text.encode()), prune, dry_run, expected)

        try:
            if form.get("action") == "apply":
                try:
                    version, planned = await run_in_threadpool(plan, False, form.get("digest", ""))
                except PlanChanged:
                    version, planned = await run_in_threadpool(plan, True)
                    return self.page(request, "apply.html", 409, context, text=text, prune=prune, planned=planned,
                                     digest=plan_digest(planned), version=version,
                                     error="Not applied: the catalog changed since your preview. Check the new "
                                     "preview below, then apply again.")
                return self.page(request, "apply.html", context=context, text="", prune=False, applied=planned,
                                 version=version)
            version, planned = await run_in_threadpool(plan, True)
        except CatalogError as exc:
            return self.page(request, "apply.html", 400, context, text=text, prune=prune,
                             error=f"Not applied: {exc}")
        return self.page(request, "apply.html", context=context, text=text, prune=prune, planned=planned,
                         digest=plan_digest(planned), version=version)

    # --- the rest ---------------------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        return self.redirect(f"{PREFIX}/models")

    async def static_file(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = self.static.get(name)
        if body is None:
            return self.problem(request, 404, "No such file.")
        return Response(body, media_type=_STATIC_TYPES[Path(name).suffix],
                        headers={"cache-control": "public, max-age=300", "x-content-type-options": "nosniff"})

    async def not_found(self, request: Request) -> Response:
        """Any other address or method under /console: a page in the console's layout, never the API's JSON.
        An address that exists for other methods (a form's address visited, a PUT) is a 405 that says so."""
        found = await self._session(request)
        context = Context(found[0], found[1], self.catalog_for(found[1])) if found else None
        allowed = sorted({method for route in self._table if route.matches(request.scope)[0] is Match.PARTIAL
                          for method in route.methods or ()})
        if not allowed:
            return self.problem(request, 404, "There is no such page in the console.", context)
        if allowed == ["POST"]:
            message = ("This address is where a console form is sent; it is not a page to open. Go back to the "
                       "page the form is on.")
        else:
            message = f"This address does not take {request.method} requests (it takes {', '.join(allowed)})."
        page = self.problem(request, 405, message, context)
        page.headers["allow"] = ", ".join(allowed)
        return page

    def routes(self) -> list[BaseRoute]:
        self._table = self._pages()
        methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]  # (a function's route has GET only)
        return [*self._table, Route(PREFIX, self.not_found, methods=methods),
                Route(f"{PREFIX}/{{rest:path}}", self.not_found, methods=methods)]

    def _pages(self) -> list[Route]:
        page = self.signed_in
        return [
            Route(PREFIX, self.home, methods=["GET"]),
            Route(f"{PREFIX}/", self.home, methods=["GET"]),
            Route(f"{PREFIX}/static/{{name}}", self.static_file, methods=["GET"]),
            Route(f"{PREFIX}/sign-in", self.sign_in_page, methods=["GET"]),
            Route(f"{PREFIX}/sign-in", self.sign_in, methods=["POST"]),
            Route(f"{PREFIX}/sign-out", page(self.sign_out), methods=["POST"]),
            Route(f"{PREFIX}/models", page(self.models), methods=["GET"]),
            Route(f"{PREFIX}/models/new", page(self.new_model_page), methods=["GET"]),
            Route(f"{PREFIX}/models/new", page(self.create_model), methods=["POST"]),
            Route(f"{PREFIX}/model", page(self.model), methods=["GET"]),
            Route(f"{PREFIX}/model/edit", page(self.edit_model), methods=["POST"]),
            Route(f"{PREFIX}/model/delete", page(self.delete_model), methods=["POST"]),
            Route(f"{PREFIX}/keys", page(self.keys), methods=["GET"]),
            Route(f"{PREFIX}/keys/new", page(self.keys), methods=["GET"]),  # reloading the page that showed a secret
            Route(f"{PREFIX}/keys/new", page(self.create_key), methods=["POST"]),
            Route(f"{PREFIX}/key", page(self.key), methods=["GET"]),
            Route(f"{PREFIX}/key/edit", page(self.update_key), methods=["POST"]),
            Route(f"{PREFIX}/key/revoke", page(self.revoke_key), methods=["POST"]),
            Route(f"{PREFIX}/upstreams", page(self.upstreams), methods=["GET"]),
            Route(f"{PREFIX}/upstreams/poll", page(self.poll), methods=["POST"]),
            Route(f"{PREFIX}/traffic", page(self.traffic_page), methods=["GET"]),
            Route(f"{PREFIX}/changes", page(self.changes), methods=["GET"]),
            Route(f"{PREFIX}/catalog.yaml", page(self.export), methods=["GET"]),
            Route(f"{PREFIX}/apply", page(self.apply_page), methods=["GET"]),
            Route(f"{PREFIX}/apply", page(self.apply), methods=["POST"]),
        ]


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a console page, never another site."""
    if target and target.startswith(f"{PREFIX}/") and not target.startswith("//") and "\\" not in target \
            and target.isprintable():  # no CR or LF: a Location header cannot carry them (it was left out)
        return target
    return f"{PREFIX}/models"


def _natural(raw: str | None) -> int | None:
    """`raw` as a count or revision (ASCII digits, below 2**63, what the database stores), else None:
    `isdigit()` alone takes '²', which int() refuses, and any length."""
    if raw and raw.isascii() and raw.isdigit() and len(raw) < 19:
        return int(raw)
    return None


def _revision(form: Mapping[str, str]) -> int | None:
    return _natural(form.get("revision"))


def _json_object(text: str) -> dict[str, Any] | str:
    """The JSON object in `text`, or a message saying why there is none."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return f"not valid JSON ({exc})"
    return value if isinstance(value, dict) else "must be a JSON object ({...})"


def _routes(model: Model, upstreams: Mapping[str, Upstream]) -> list[dict[str, Any]]:
    """Where inference for `model` goes (the domain's model_routes, as the page shows them)."""
    return [{"upstream": upstream, "upstream_model": upstream_model, "weight": weight,
             **({"discovered": True} if weight is None else {})}
            for upstream, upstream_model, weight in model_routes(model, upstreams)]


def _page_links(request: Request, page: views.Page) -> dict[str, str | None]:
    def at(number: int) -> str:
        query = dict(request.query_params)
        query.pop("done", None)
        query["page"] = str(number)
        return f"{request.url.path}?{urlencode(query)}"

    return {"previous": at(page.number - 1) if page.number > 1 else None,
            "next": at(page.number + 1) if page.number < page.pages else None}
