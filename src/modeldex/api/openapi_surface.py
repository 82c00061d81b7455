"""The generated part of the OpenAPI document: readiness, metrics, the document itself, the admin API and
the inference routes, merged by `openapi.py` with the hand-written Models part (`openapi.yaml`).

Generated from the registries the server routes by (`catalog.kinds.KINDS`, `gateway.endpoints.ENDPOINTS`)
and from the entities' own pydantic models, so the document cannot drift from the rules it describes.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from modeldex.catalog.callers import Scope
from modeldex.catalog.changes import MAX_VERSION
from modeldex.catalog.kinds import KINDS, Kind
from modeldex.gateway.endpoints import ENDPOINTS, Endpoint

Schema = dict[str, Any]
REF = "#/components/schemas/{model}"

# Every error status a route can answer, as a shared response in the OpenAI envelope.
ERROR_RESPONSES: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "The request is invalid: the envelope's `param` names the field."),
    401: ("Unauthorized", "No API key, or one that is unknown or revoked."),
    403: ("Forbidden", "The key lacks the scope the operation needs."),
    404: ("NotFound", "No such model (or one the key may not see)."),
    409: ("Conflict", "It exists already, or others still refer to it."),
    412: ("PreconditionFailed", ("`If-Match` names a revision that is no longer the current one (or "
          "`expected_plan` a plan that no longer holds).")),
    413: ("PayloadTooLarge", "The request body is larger than the server takes."),
    429: ("TooManyRequests", "The key's rate limit (or the address's allowance of failed keys) is used up."),
    431: ("HeadersTooLarge", "The request's headers are larger than the server takes."),
    502: ("BadGateway", "The upstream failed, or refused modeldex's credentials."),
    503: ("Unavailable", "Not ready, the catalog database is unreachable, or no upstream serves the model."),
    504: ("GatewayTimeout", "The upstream did not answer in time."),
}
ERROR_DESCRIPTIONS = dict(ERROR_RESPONSES.values())  # by response name
# Every route's caller is resolved first: no key or a bad one (401), too many (429), oversized headers (431).
CALLER_ERRORS = (401, 429, 431)
ADMIN_ERRORS = (*CALLER_ERRORS, 403, 503)  # 503: the database is unreachable for a write
JSON = "application/json"


def _ref(name: str) -> Schema:
    return {"$ref": REF.format(model=name)}


def _json(schema: Schema) -> dict[str, Any]:
    return {JSON: {"schema": schema}}


def _answers(ok: dict[str, Any], *statuses: int) -> dict[str, Any]:
    responses = dict(ok)
    for status in sorted(set(statuses)):
        responses[str(status)] = {"$ref": f"#/components/responses/{ERROR_RESPONSES[status][0]}"}
    return responses


def _ok(description: str, schema: Schema, status: int = 200) -> dict[str, Any]:
    return {str(status): {"description": description, "content": _json(schema)}}


def _query(name: str, schema: Schema, description: str, required: bool = False) -> Schema:
    return {"name": name, "in": "query", "required": required, "description": description, "schema": schema}


def _path(name: str, description: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": {"type": "string"}}


IF_MATCH = {"name": "If-Match", "in": "header", "required": False, "schema": {"type": "string"},
            "description": "The revision (`ETag`) the change is based on: 412 when it is no longer current."}
# Yes or no, in any case; empty is no.
FLAG = {"type": "string", "pattern": "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|[Yy][Ee][Ss]|[Nn][Oo]|1|0)?$"}


def _entity_schemas(components: dict[str, Schema]) -> dict[str, tuple[str, str, str]]:
    """Each kind's create, update and answer schemas (by component name), from its pydantic model."""
    names: dict[str, tuple[str, str, str]] = {}
    for kind in KINDS:
        title = kind.name.capitalize()
        create = _pydantic(kind.type, "validation", components)
        update = copy.deepcopy(create)
        update.pop("required", None)
        update["description"] = (f"The fields to change (merged; null removes an optional one); the "
                                 f"`{kind.key_field}` cannot change. `revision` is ignored.")
        update["properties"]["revision"] = {"type": "integer"}
        answer = _pydantic(kind.type, "serialization", components)
        answer["properties"]["revision"] = {"type": "integer", "description": "Changes on every write: the ETag."}
        answer["required"] = sorted({*answer.get("required", ()), kind.key_field, "revision"})
        if kind.name == "upstream":
            answer["properties"]["health"] = _ref("UpstreamHealth")
            answer["required"].append("health")
        components[f"Admin{title}Create"] = create
        components[f"Admin{title}Update"] = update
        components[f"Admin{title}"] = answer
        names[kind.name] = (f"Admin{title}Create", f"Admin{title}Update", f"Admin{title}")
    return names


def _pydantic(model: type[BaseModel], mode: str, components: dict[str, Schema]) -> Schema:
    schema = model.model_json_schema(ref_template=REF, mode=mode)  # type: ignore[arg-type]
    for name, definition in schema.pop("$defs", {}).items():
        components.setdefault(name, definition)
    schema.pop("title", None)
    bounded: Schema = _standard_bounds(schema)
    return bounded


_BOUNDS = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}


def _standard_bounds(schema: Any) -> Any:
    """pydantic writes a bound behind a BeforeValidator (the upstreams' durations) as `ge`/`le`, which no
    JSON Schema tool reads: as `minimum`/`maximum`."""
    if isinstance(schema, dict):
        return {_BOUNDS.get(k, k) if "type" in schema else k: _standard_bounds(v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_standard_bounds(v) for v in schema]
    return schema


def _list_of(item: Schema) -> Schema:
    return {"type": "object", "required": ["object", "data"],
            "properties": {"object": {"type": "string", "const": "list"}, "data": {"type": "array", "items": item}}}


def _deleted(kind: str) -> Schema:
    return {"type": "object", "required": ["id", "object", "deleted"],
            "properties": {"id": {"type": "string"}, "object": {"type": "string", "const": kind},
                           "deleted": {"type": "boolean", "const": True}}}


def _operation(op_id: str, summary: str, responses: dict[str, Any], tags: tuple[str, ...] = ("Admin",),
               parameters: list[Schema] | None = None, body: dict[str, Any] | None = None,
               description: str | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {"tags": list(tags), "operationId": op_id, "summary": summary}
    if description:
        operation["description"] = description
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": True, "content": body}
    operation["responses"] = responses
    return operation


def _kind_paths(kind: Kind[Any], schemas: tuple[str, str, str]) -> dict[str, Any]:
    create, update, answer = schemas
    noun, plural = kind.name, kind.collection
    key = _path("key", f"The {noun}'s `{kind.key_field}`" + (" (may contain `/`)." if noun in ("model", "alias")
                                                                else "."))
    etag = {"ETag": {"schema": {"type": "string"}, "description": "The revision, for `If-Match`."}}
    item_ok = {"200": {"description": f"The {noun}.", "headers": etag, "content": _json(_ref(answer))}}
    created = {"201": {"description": f"The {noun} was created.", "headers": etag, "content": _json(_ref(answer))}}
    title = noun.capitalize()
    return {
        f"/v1/admin/{plural}": {
            "get": _operation(f"adminList{title}s", f"List {plural}", _answers(
                _ok(f"Every {noun}.", _list_of(_ref(answer))), *ADMIN_ERRORS)),
            "post": _operation(f"adminCreate{title}", f"Create a {noun}", _answers(
                created, 400, 409, 413, *ADMIN_ERRORS), body=_json(_ref(create))),
        },
        f"/v1/admin/{plural}/{{key}}": {
            "parameters": [key],
            "get": _operation(f"adminGet{title}", f"Retrieve a {noun}", _answers(item_ok, 404, *ADMIN_ERRORS)),
            "patch": _operation(f"adminUpdate{title}", f"Change a {noun}", _answers(
                item_ok, 400, 404, 409, 412, 413, *ADMIN_ERRORS), parameters=[IF_MATCH], body=_json(_ref(update))),
            "delete": _operation(f"adminDelete{title}", f"Delete a {noun}", _answers(
                _ok(f"The {noun} was deleted.", _deleted(noun)), 404, 409, 412, *ADMIN_ERRORS),
                parameters=[IF_MATCH]),
        },
    }


POLICY: Schema = {
    "type": "object",
    "description": "Which models the key may see: `{\"all\": true}`, or groups and id patterns.",
    "properties": {"all": {"type": "boolean"}, "groups": {"type": "array", "items": {"type": "string"}},
                   "patterns": {"type": "array", "items": {"type": "string"}}},
}
KEY: Schema = {
    "type": "object",
    "required": ["name", "scope", "key", "policy", "rate_limit", "created_at", "revoked_at", "revision"],
    "properties": {
        "name": {"type": "string"},
        "scope": {"type": "string", "enum": [s.value for s in Scope]},
        "key": {"type": "string", "description": "The redacted key: enough to tell keys apart, never the secret."},
        "policy": POLICY,
        "rate_limit": {"type": ["string", "null"]},
        "created_at": {"type": "integer"},
        "revoked_at": {"type": ["integer", "null"]},
        "revision": {"type": "integer"},
    },
}
_KEY_FIELDS: Schema = {
    "scope": {"type": "string", "enum": [s.value for s in Scope]},
    "policy": POLICY,
    "rate_limit": {"type": ["string", "null"], "description": "Requests per period, such as `600/m`."},
}
KEY_CREATE: Schema = {"type": "object", "required": ["name"], "additionalProperties": False,
                      "properties": {"name": {"type": "string"}, **_KEY_FIELDS}}
KEY_UPDATE: Schema = {"type": "object", "additionalProperties": False,
                      "properties": {"name": {"type": "string"}, "revision": {"type": "integer"}, **_KEY_FIELDS}}
CHANGE: Schema = {
    "type": "object",
    "required": ["version", "at", "actor", "entity", "id", "op", "before", "after"],
    "properties": {
        "version": {"type": "integer"}, "at": {"type": "number"}, "actor": {"type": "string"},
        "entity": {"type": "string"}, "id": {"type": "string"},
        "op": {"type": "string", "enum": ["create", "update", "delete"]},
        "before": {"type": ["object", "null"]}, "after": {"type": ["object", "null"]},
    },
}
CATALOG_FILE: Schema = {
    "type": ["object", "null"],
    "description": "A catalog file: the operator's models, aliases, groups and upstreams (see docs/cli.md); "
                   "an empty YAML file (null) is an empty catalog.",
    "properties": {kind.collection: {"type": ["array", "null"], "items": {"type": "object"}} for kind in KINDS},
}
APPLIED: Schema = {
    "type": "object",
    "required": ["version", "dry_run", "plan", "changes"],
    "properties": {"version": {"type": "integer"}, "dry_run": {"type": "boolean"},
                   "plan": {"type": "string", "description": "A digest of these changes: pass it back as "
                            "`expected_plan` to apply exactly what a dry run showed."},
                   "changes": {"type": "array", "items": {"type": "object"}}},
}
ROUTE_ROW: Schema = {
    "type": "object",
    "required": ["model", "upstream", "upstream_model"],
    "properties": {"model": {"type": "string"}, "upstream": {"type": "string"}, "upstream_model": {"type": "string"},
                   "weight": {"type": "integer"}, "discovered": {"type": "boolean"}},
}
ROUTE_ADD: Schema = {
    "type": "object",
    "required": ["model", "upstream"],
    "additionalProperties": False,
    "properties": {"model": {"type": "string", "minLength": 1}, "upstream": {"type": "string", "minLength": 1},
                   "upstream_model": {"type": ["string", "null"], "minLength": 1},
                   "weight": {"type": "integer", "minimum": 1}},
}
HEALTH: Schema = {"type": "object", "description": "How polling (and inference through it) has gone."}
SYNC: Schema = {
    "type": "object",
    "required": ["upstream", "ok", "error", "latency_ms", "model_count", "added", "updated", "stale", "removed",
                 "kept", "shadowed", "version", "health"],
    "properties": {"upstream": {"type": "string"}, "ok": {"type": "boolean"}, "error": {"type": ["string", "null"]},
                   "latency_ms": {"type": ["number", "null"]}, "model_count": {"type": ["integer", "null"]},
                   **{field: {} for field in ("added", "updated", "stale", "removed", "kept", "shadowed")},
                   "version": {"type": ["integer", "null"]}, "health": HEALTH},
}


def _admin_paths(components: dict[str, Schema]) -> dict[str, Any]:
    schemas = _entity_schemas(components)
    components.update(AdminKey=KEY, AdminKeyCreate=KEY_CREATE, AdminKeyUpdate=KEY_UPDATE, AdminChange=CHANGE,
                      CatalogFile=CATALOG_FILE, CatalogApplied=APPLIED, AdminRoute=ROUTE_ROW,
                      AdminRouteAdd=ROUTE_ADD, UpstreamHealth=HEALTH, UpstreamSync=SYNC)
    etag = {"ETag": {"schema": {"type": "string"}}}
    key_ok = {"200": {"description": "The key.", "headers": etag, "content": _json(_ref("AdminKey"))}}
    created_key = {**KEY, "required": [*KEY["required"], "secret"],
                   "properties": {**KEY["properties"], "secret": {
                       "type": "string", "description": "The key itself: in this answer and nowhere else."}}}
    name = _path("name", "The key's name.")
    paths: dict[str, Any] = {
        "/v1/admin/changes": {"get": _operation(
            "adminChanges", "The change feed", _answers(_ok("Changes after `since`, oldest first.", {
                "type": "object", "required": ["object", "data", "version", "has_more"],
                "properties": {"object": {"type": "string", "const": "list"},
                               "data": {"type": "array", "items": _ref("AdminChange")},
                               "version": {"type": "integer"}, "has_more": {"type": "boolean"}}}),
                400, *ADMIN_ERRORS),
            parameters=[_query("since", {"type": "integer", "minimum": 0, "maximum": MAX_VERSION},
                               "Changes after this catalog version."),
                        _query("limit", {"type": "integer", "minimum": 1, "maximum": 10_000},
                               "At most this many, in whole versions (more only when the first version alone "
                               "has more).")])},
        "/v1/admin/catalog": {"get": _operation(
            "adminExportCatalog", "Export the catalog file", _answers({"200": {
                "description": "What the operator defined (discovered models come back from their upstreams).",
                "content": {JSON: {"schema": _ref("CatalogFile")},
                            "application/yaml": {"schema": _ref("CatalogFile")}}}}, 400, *ADMIN_ERRORS),
            parameters=[_query("format", {"type": "string", "enum": ["json", "yaml"]}, "JSON (default) or YAML.")])},
        "/v1/admin/catalog/apply": {"post": _operation(
            "adminApplyCatalog", "Apply a catalog file", _answers(
                _ok("The changes made (or, on a dry run, those that would be).", _ref("CatalogApplied")),
                400, 409, 412, 413, *ADMIN_ERRORS),
            parameters=[_query("prune", FLAG, "Also delete what the file does not name."),
                        _query("dry_run", FLAG, "Report the changes without making them."),
                        _query("expected_plan", {"type": "string"}, "A dry run's `plan`: apply only if the "
                               "changes are still those (else 412 `plan_changed`, nothing applied).")],
            body={JSON: {"schema": _ref("CatalogFile")}, "application/yaml": {"schema": _ref("CatalogFile")}},
            description="Makes the catalog match the file, atomically: all of it or nothing.")},
        "/v1/admin/keys": {
            "get": _operation("adminListKeys", "List keys", _answers(
                _ok("The keys (never their secrets).", _list_of(_ref("AdminKey"))), 400, *ADMIN_ERRORS),
                parameters=[_query("all", FLAG, "Include revoked keys.")]),
            "post": _operation("adminCreateKey", "Create a key", _answers(
                {"201": {"description": "The key, with its secret (shown once).", "headers": etag,
                         "content": _json(created_key)}}, 400, 409, 413, *ADMIN_ERRORS),
                body=_json(_ref("AdminKeyCreate"))),
        },
        "/v1/admin/keys/{name}/explain": {"get": _operation(
            "adminExplainKey", "Whether a key may see a model, and by which rule", _answers(_ok("The decision.", {
                "type": "object", "required": ["key", "model", "visible", "rule"],
                "properties": {"key": {"type": "string"}, "model": {"type": "string"}, "visible": {"type": "boolean"},
                               "rule": {"type": "string"}}}), 400, 404, *ADMIN_ERRORS),
            parameters=[name, _query("model", {"type": "string", "minLength": 1}, "The model id.", required=True)])},
        "/v1/admin/keys/{name}": {
            "parameters": [name],
            "get": _operation("adminGetKey", "Retrieve a key", _answers(key_ok, 400, 404, *ADMIN_ERRORS)),
            "patch": _operation("adminUpdateKey", "Change a key's scope, policy or rate limit", _answers(
                key_ok, 400, 404, 409, 412, 413, *ADMIN_ERRORS), parameters=[IF_MATCH],
                body=_json(_ref("AdminKeyUpdate"))),
            "delete": _operation("adminRevokeKey", "Revoke a key", _answers(
                _ok("The key was revoked.", _deleted("key")), 400, 404, 409, 412, *ADMIN_ERRORS), parameters=[IF_MATCH]),
        },
        "/v1/admin/auth/explain": {"post": _operation(
            "adminExplainToken", "Whether a token from an identity provider would be accepted, as whom, or why not",
            _answers(_ok("The verdict: accepted with the caller, scope and policy, or refused with the reason.", {
                "type": "object", "required": ["accepted"],
                "properties": {"accepted": {"type": "boolean"}, "reason": {"type": "string"},
                               "issuer": {"type": "string"}, "caller": {"type": "string"},
                               "actor": {"type": "string"}, "scope": {"type": "string"},
                               "policy": {"type": "object"}, "rate_limit": {"type": ["string", "null"]},
                               "header": {"type": "object"}, "claims": {"type": "object"}}}),
                     400, 413, *ADMIN_ERRORS),
            body=_json({"type": "object", "required": ["token"],
                        "properties": {"token": {"type": "string", "minLength": 1}}}))},
        "/v1/admin/routes": {
            "get": _operation("adminListRoutes", "Every model's inference routes", _answers(
                _ok("The routes, discovered models' implicit ones too.", _list_of(_ref("AdminRoute"))),
                *ADMIN_ERRORS)),
            "post": _operation("adminAddRoute", "Route a model to an upstream too", _answers(
                _ok("The model with its routes.", _ref("AdminModel"), 201), 400, 404, 409, 413, *ADMIN_ERRORS),
                body=_json(_ref("AdminRouteAdd"))),
            "delete": _operation("adminRemoveRoute", "Remove one of a model's routes", _answers(
                _ok("The model with its routes.", _ref("AdminModel")), 400, 404, 409, *ADMIN_ERRORS),
                parameters=[_query("model", {"type": "string", "minLength": 1}, "The model id.", required=True),
                            _query("upstream", {"type": "string", "minLength": 1}, "The upstream.", required=True),
                            _query("upstream_model", {"type": "string", "minLength": 1},
                                   "The upstream's id for the model, when it has several routes there.")]),
        },
        "/v1/admin/upstreams/{name}/sync": {"post": _operation(
            "adminSyncUpstream", "Poll an upstream now", _answers(
                _ok("What the poll found and changed.", _ref("UpstreamSync")), 404, 409, *ADMIN_ERRORS),
            parameters=[_path("name", "The upstream's name.")])},
    }
    for kind in KINDS:
        paths.update(_kind_paths(kind, schemas[kind.name]))
    return paths


def _inference_operation(endpoint: Endpoint) -> dict[str, Any]:
    name = endpoint.path[len("/v1/"):]
    op_id = "infer" + "".join(part.capitalize() for part in name.replace("/", "_").split("_"))
    model = {"type": "string", "minLength": 1, "description": "The catalog id (or alias) of the model."}
    if endpoint.multipart:
        body = {"multipart/form-data": {"schema": {
            "type": "object", "required": ["model", "file"],
            "properties": {"model": model, "file": {"type": "string", "format": "binary"}}}}}
    else:
        body = _json({"type": "object", "required": ["model"], "additionalProperties": True,
                      "properties": {"model": model, "stream": {"type": "boolean"}}})
    ok = {"200": {"description": "The upstream's answer, passed through (a stream as server-sent events).",
                  "content": {JSON: {"schema": {"type": "object"}},
                              "text/event-stream": {"schema": {"type": "string"}},
                              **({"audio/*": {"schema": {"type": "string", "format": "binary"}}}
                                 if endpoint.path == "/v1/audio/speech" else {})}}}
    anthropic: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"anthropicKey": []}]
    security = anthropic if endpoint.protocol == "anthropic" else None
    responses = _answers(ok, 400, 404, 413, 502, 503, 504, *CALLER_ERRORS)
    if security:  # Anthropic's clients read Anthropic's error envelope; a few early refusals are OpenAI's
        either = {"anyOf": [_ref("Error"), _ref("AnthropicError")]}
        for status, answer in responses.items():
            if status != "200":
                name = answer["$ref"].rsplit("/", 1)[1]
                responses[status] = {"description": ERROR_DESCRIPTIONS[name], "content": _json(either)}
    operation = _operation(
        op_id, f"{endpoint.path} ({endpoint.protocol} protocol)", responses, tags=("Inference",), body=body,
        description="Forwarded to an upstream that serves the model; the body is passed on unchanged but for "
                    "`model`. An upstream's own error answers are passed through as they come.")
    if security:
        operation["security"] = security
    return operation


ANTHROPIC_ERROR: Schema = {
    "type": "object", "required": ["type", "error"],
    "properties": {
        "type": {"type": "string", "const": "error"},
        "error": {"type": "object", "required": ["type", "message"],
                  "properties": {"type": {"type": "string"}, "message": {"type": "string"},
                                 "details": {"type": "object"}}},
        "request_id": {"type": "string"}}}


def _service_paths() -> dict[str, Any]:
    return {
        "/readyz": {"get": _operation(
            "ready", "Readiness", _answers(_ok("The catalog is loaded and the store answers.", {
                "type": "object", "required": ["status"],
                "properties": {"status": {"type": "string", "const": "ready"},
                               "version": {"type": "integer", "description": "For admin callers only."},
                               "rate_limits": {"type": "object"}}}), 503, *CALLER_ERRORS),
            tags=("Service",), description="Needs no key; an admin key also gets the catalog version.")
            | {"security": [{}, {"bearerAuth": []}]}},
        "/metrics": {"get": _operation(
            "metrics", "Prometheus metrics", _answers({"200": {
                "description": "The Prometheus text exposition.",
                "content": {"text/plain": {"schema": {"type": "string"}}}}}, 403, *CALLER_ERRORS),
            tags=("Service",), description="Needs the metrics token or an admin key, unless made public.")},
        "/openapi.json": {"get": _operation(
            "openapi", "This document", {"200": {"description": "The OpenAPI document.",
                                                 "content": _json({"type": "object"})}},
            tags=("Service",)) | {"security": []}},
    }


def extend(document: dict[str, Any]) -> dict[str, Any]:
    """`document` (the hand-written Models part) with the rest of the HTTP surface added."""
    components = document["components"]
    schemas = components["schemas"]
    for name, description in ERROR_RESPONSES.values():
        components["responses"].setdefault(name, {"description": description,
                                                  "content": _json(_ref("Error"))})
    schemas["AnthropicError"] = ANTHROPIC_ERROR
    components["securitySchemes"]["anthropicKey"] = {
        "type": "apiKey", "in": "header", "name": "x-api-key",
        "description": "On the Anthropic routes, the modeldex key as Anthropic's clients send it."}
    paths = document["paths"]
    for item in paths.values():  # the Models routes resolve their caller (429) as every route does
        for operation in item.values():
            if isinstance(operation, dict) and "responses" in operation:
                caller = (429,) if "401" in operation["responses"] else ()
                operation["responses"] = _answers(operation["responses"], *caller, 431)
    for path in ("/v1/models", "/v1/models/{model_id}"):
        # Documented in words, not as parameters: schemathesis's every-check run on the Models routes
        # (tests/test_openapi.py) takes twice as long with them (measured: 18 s against 36 s).
        operation = paths[path]["get"]
        operation["description"] += (" With `?expand=metadata`, models carry their metadata (context_length, "
                                      "pricing, ...). Answers carry an `ETag`: send it back as `If-None-Match` "
                                      "and get 304 while it is current.")
        operation["responses"]["304"] = {"description": "Not modified: `If-None-Match` names the current `ETag`."}
    paths.update(_service_paths())
    paths.update(_admin_paths(schemas))
    paths.update({endpoint.path: {"post": _inference_operation(endpoint)} for endpoint in ENDPOINTS.values()})
    document["tags"] += [{"name": "Admin"}, {"name": "Inference"}]
    return document
