"""Admin inputs schemathesis found mishandled (tests/test_openapi.py): each is refused in the envelope,
and a refused write leaves the catalog as it was."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .inprocess import Harness, error_of

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    harness = Harness(tmp_path_factory.mktemp("admin-inputs"))
    yield harness
    harness.stop()


@pytest.fixture(scope="module")
def admin(harness: Harness) -> str:
    return harness.key("admin", "admin")


async def test_a_lone_surrogate_echoed_in_an_error_is_a_400_not_a_500(harness: Harness, admin: str) -> None:
    # JSON may escape a lone surrogate; echoed in an error's message and `param`, which orjson cannot
    # encode, it answered 500. (The file is now refused as it is read, so nothing is echoed at all.)
    response = await harness.request("POST", "/v1/admin/catalog/apply", admin, content=b'{"\\ud800x": []}')
    error = error_of(response, 400, "invalid_value")
    assert error["param"] == "file"


@pytest.mark.parametrize(("path", "param"), [
    ("/v1/admin/keys?all=maybe", "all"),
    ("/v1/admin/catalog?format=xml", "format"),
])
async def test_unknown_query_values_are_refused_not_taken_as_the_default(harness: Harness, admin: str, path: str,
                                                                         param: str) -> None:
    error = error_of(await harness.request("GET", path, admin), 400, "invalid_value")
    assert error["param"] == param


@pytest.mark.parametrize(("query", "body"), [
    ("?prune=true", b""),  # was applied as an empty catalog: with ?prune, every model deleted
    ("?prune=true", b"  \n"),
    ("?prune=true", b"models: {}\n"),  # a section that is not a list was taken as an empty one
    ("?prune=sometimes", b"{}"),  # an unknown flag was taken as no
    ("?dry_run=perhaps", b"{}"),
])
async def test_catalog_apply_refuses_what_is_not_a_catalog_file(harness: Harness, admin: str, query: str,
                                                                body: bytes) -> None:
    before = (await harness.request("GET", "/v1/admin/catalog", admin)).json()
    assert before["models"]  # the seed: something a prune would delete
    response = await harness.request("POST", "/v1/admin/catalog/apply" + query, admin, content=body)
    error_of(response, 400, "invalid_value")
    assert (await harness.request("GET", "/v1/admin/catalog", admin)).json() == before


async def test_known_flag_values_still_work(harness: Harness, admin: str) -> None:
    response = await harness.request("POST", "/v1/admin/catalog/apply?prune=TRUE&dry_run=1", admin,
                                     content=b"models:\n")
    assert response.status_code == 200, response.text
    assert response.json()["dry_run"] is True
    assert response.json()["changes"]  # a dry-run prune of every model
    yaml = await harness.request("GET", "/v1/admin/catalog?format=yaml", admin)
    assert yaml.headers["content-type"].startswith("application/yaml")


async def test_a_lone_surrogate_in_a_field_is_a_400_not_a_500(harness: Harness, admin: str) -> None:
    for path, body in (("/v1/admin/groups", b'{"name": "g\\ud800", "members": ["x"]}'),
                       ("/v1/admin/models", b'{"id": "ok", "\\ud800": 1}')):
        response = await harness.request("POST", path, admin, content=body, headers={"content-type": "application/json"})
        error_of(response, 400, "invalid_json")  # refused as it is read: nothing is echoed


async def test_an_apply_confirmed_from_a_preview_applies_only_what_the_preview_showed(harness: Harness,
                                                                                      admin: str) -> None:
    file = b'{"models": [{"id": "plan/one", "owned_by": "ops"}]}'
    preview = await harness.request("POST", "/v1/admin/catalog/apply?prune=true&dry_run=true", admin, content=file)
    assert preview.status_code == 200
    shown = preview.json()
    assert shown["dry_run"] is True and {"op": "create", "entity": "model", "id": "plan/one", "fields": []} \
        in shown["changes"]
    # Someone adds a model between the preview and the apply: the prune would now delete it too.
    created = await harness.request("POST", "/v1/admin/models", admin, json={"id": "plan/late", "owned_by": "ops"})
    assert created.status_code == 201
    before = (await harness.request("GET", "/v1/admin/catalog", admin)).content
    refused = await harness.request("POST", f"/v1/admin/catalog/apply?prune=true&expected_plan={shown['plan']}",
                                    admin, content=file)
    assert "preview it again" in error_of(refused, 412, "plan_changed")["message"]
    assert (await harness.request("GET", "/v1/admin/catalog", admin)).content == before  # nothing applied
    # Previewed again, the new plan applies.
    again = (await harness.request("POST", "/v1/admin/catalog/apply?prune=true&dry_run=true", admin,
                                   content=file)).json()
    assert again["plan"] != shown["plan"]
    assert {"op": "delete", "entity": "model", "id": "plan/late", "fields": []} in again["changes"]
    applied = await harness.request("POST", f"/v1/admin/catalog/apply?prune=true&expected_plan={again['plan']}",
                                    admin, content=file)
    assert applied.status_code == 200 and applied.json()["plan"] == again["plan"]
    assert applied.json()["changes"] == again["changes"]


async def test_a_rename_or_a_null_for_an_unknown_field_is_refused(harness: Harness, admin: str) -> None:
    """A key's name cannot change, as no entity's key can; `{"field": null}` removes a field, and one the
    entity does not have is a typo (the CLI's `--clear context_lenght`), refused as unknown like any value."""
    harness.key("renamed-not", "read")
    harness.catalog.create("model", {"id": "typo-target", "context_length": 8})
    version = harness.store.current_version()
    response = await harness.request("PATCH", "/v1/admin/keys/renamed-not", admin, json={"name": "other"})
    assert error_of(response, 400, "invalid_value")["message"] == "name: cannot be changed (delete and create instead)"
    same = await harness.request("PATCH", "/v1/admin/keys/renamed-not", admin, json={"name": "renamed-not"})
    assert same.status_code == 200
    response = await harness.request("PATCH", "/v1/admin/models/typo-target", admin, json={"context_lenght": None})
    error = error_of(response, 400, "invalid_value")
    assert (error["param"], error["message"]) == ("context_lenght", "context_lenght: unknown field")
    assert harness.store.current_version() == version


async def test_if_match_may_list_revisions(harness: Harness, admin: str) -> None:
    """RFC 9110 allows a list: the write goes ahead when the current revision is among them. A tag that is
    no revision matches none, and the 412 says so (it said "not -1")."""
    harness.catalog.create("model", {"id": "listed-etags"})
    path = "/v1/admin/models/listed-etags"
    stale = await harness.request("PATCH", path, admin, json={"context_length": 9}, headers={"If-Match": '"7", "8"'})
    assert "is at revision 1, not 7" in error_of(stale, 412, "precondition_failed")["message"]
    garbled = await harness.request("PATCH", path, admin, json={"context_length": 9}, headers={"If-Match": '"abc"'})
    assert error_of(garbled, 412, "precondition_failed")["message"] == (
        "model 'listed-etags' is at revision 1; If-Match names no revision (send the ETag, e.g. \"1\")")
    assert harness.catalog.get("model", "listed-etags")[1] == 1  # neither changed it
    listed = await harness.request("PATCH", path, admin, json={"context_length": 9},
                                   headers={"If-Match": '"5", W/"1", "abc"'})
    assert listed.status_code == 200 and listed.json()["revision"] == 2
    harness.key("listed-key", "read")
    revoked = await harness.request("DELETE", "/v1/admin/keys/listed-key", admin, headers={"If-Match": '"9", "1"'})
    assert revoked.status_code == 200, revoked.text
    gone = await harness.request("DELETE", "/v1/models/listed-etags", admin, headers={"If-Match": '"1", "2"'})
    assert gone.json() == {"id": "listed-etags", "object": "model", "deleted": True}


@pytest.mark.parametrize(("body", "param"), [
    (b"models:\n  - id: latin\n    description: caf\xe9\n", "file"),  # was stored as "caf\ufffd"
    (b"models:\n  - id: bin\n    name: !!binary aGVsbG8=\n", "models[0].name"),  # was stored as "hello"
    (b"1: x\nmodels: []\n", "file"),  # a key that is not text beside the sections: a 500
])
async def test_catalog_apply_refuses_what_json_cannot_say_and_changes_nothing(harness: Harness, admin: str,
                                                                              body: bytes, param: str) -> None:
    before = (await harness.request("GET", "/v1/admin/catalog", admin)).json()
    response = await harness.request("POST", "/v1/admin/catalog/apply", admin, content=body)
    assert error_of(response, 400, "invalid_value")["param"] == param
    assert (await harness.request("GET", "/v1/admin/catalog", admin)).json() == before


async def test_a_route_body_with_an_unknown_field_is_refused(harness: Harness, admin: str) -> None:
    """Every admin body refuses fields it does not know, routes' too: a misspelt `upstream_model` routed the
    model to the upstream under the catalog's id, silently. A refusal names the field as it was sent."""
    harness.catalog.create("upstream", {"name": "route-typo-up", "base_url": "http://127.0.0.1:9/v1"})
    harness.catalog.create("model", {"id": "route-typo"})
    version = harness.store.current_version()
    for body, param in (({"upstream_modle": "theirs"}, "upstream_modle"),
                        ({"upstream_model": "a//b"}, "upstream_model"),  # was `model`: not the field sent
                        ({"upstream": "nowhere"}, "upstream")):  # was `routes.0.upstream`
        response = await harness.request("POST", "/v1/admin/routes", admin,
                                         json={"model": "route-typo", "upstream": "route-typo-up", **body})
        assert error_of(response, 400, "invalid_value")["param"] == param
    assert harness.store.current_version() == version
    added = await harness.request("POST", "/v1/admin/routes", admin,
                                  json={"model": "route-typo", "upstream": "route-typo-up", "upstream_model": "theirs"})
    assert added.status_code == 201 and added.json()["routes"] == [
        {"upstream": "route-typo-up", "model": "theirs", "weight": 1}]


async def test_what_get_answers_can_be_patched_back_unchanged(harness: Harness, admin: str) -> None:
    """A tool that reads an entity, edits a field and sends the whole document back: a key's `key`,
    `created_at` and `revoked_at` and an upstream's `health` were refused as unknown fields."""
    harness.key("round-trip", "read", {"patterns": ["MiniMax-*"]})
    harness.catalog.create("upstream", {"name": "round-trip-up", "base_url": "http://127.0.0.1:9/v1"})
    for path in ("/v1/admin/keys/round-trip", "/v1/admin/upstreams/round-trip-up"):
        read = (await harness.request("GET", path, admin)).json()
        response = await harness.request("PATCH", path, admin, json=read, headers={"If-Match": f'"{read["revision"]}"'})
        assert response.status_code == 200, response.text
        assert response.json()["revision"] == read["revision"]  # nothing changed
    read = (await harness.request("GET", "/v1/admin/keys/round-trip", admin)).json()
    for field, value in (("created_at", 1), ("key", "sk-mdx-other..."), ("revoked_at", 5)):
        response = await harness.request("PATCH", "/v1/admin/keys/round-trip", admin,
                                         json={**read, field: value, "scope": "admin"})
        assert error_of(response, 400, "invalid_value")["param"] == field
    assert harness.catalog.get_key("round-trip").revision == read["revision"]


async def test_a_201_says_where_the_created_entity_is(harness: Harness, admin: str) -> None:
    """RFC 9110: a 201 without `Location` names the request's URL (the collection) as what was created."""
    created = await harness.request("POST", "/v1/admin/models", admin, json={"id": "where/is:it%é"})
    assert created.status_code == 201
    location = created.headers["location"]
    assert location == "/v1/admin/models/where/is:it%25%C3%A9"
    read = await harness.request("GET", location, admin)
    assert read.status_code == 200 and read.json()["id"] == "where/is:it%é"
    key = await harness.request("POST", "/v1/admin/keys", admin, json={"name": "located"})
    assert key.status_code == 201 and key.headers["location"] == "/v1/admin/keys/located"
    group = await harness.request("POST", "/v1/admin/groups", admin, json={"name": "located"})
    assert group.headers["location"] == "/v1/admin/groups/located"


async def test_a_null_scope_or_policy_on_a_key_is_refused(harness: Harness, admin: str) -> None:
    """`{"policy": null}` answered 200 and changed nothing (for models, null removes a field or is refused);
    read as "all models" it would widen the key: refused, naming the field. A null rate_limit still means
    the server's default."""
    harness.key("null-fields", "read", {"patterns": ["MiniMax-*"]}, rate_limit="5/m")
    before = harness.catalog.get_key("null-fields")
    for field in ("scope", "policy"):
        response = await harness.request("PATCH", "/v1/admin/keys/null-fields", admin, json={field: None})
        assert error_of(response, 400, "invalid_value")["param"] == field
    assert harness.catalog.get_key("null-fields") == before
    cleared = await harness.request("PATCH", "/v1/admin/keys/null-fields", admin, json={"rate_limit": None})
    assert cleared.status_code == 200 and cleared.json()["rate_limit"] is None
