"""Tokens from identity providers, edge cases in process: an issuer configured with a static public key
(no provider process needed), claims mapped to scope, policy and rate limits, answers remembered only
while the token stands, and the rules an issuer's configuration follows. The real provider is in
test_identity.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from modeldex.catalog.errors import InvalidInput
from modeldex.catalog.issuers import Issuer
from modeldex.identity.credentials import IssuerTokens
from modeldex.identity.tokens import claim

from .inprocess import Harness, error_of

pytestmark = pytest.mark.anyio

ISSUER = "https://login.example.test/realms/acme"
AUDIENCE = "modeldex"


@pytest.fixture
def signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def harness(tmp_path: Any, signing_key: ec.EllipticCurvePrivateKey) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    harness.catalog.create("model", {"id": "team/model-a", "created": 1700000000})
    harness.catalog.create("model", {"id": "team/model-b", "created": 1700000001})
    harness.catalog.create("group", {"name": "team", "members": ["team/*"]})
    harness.catalog.create("group", {"name": "only-a", "members": ["team/model-a"]})
    pem = signing_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    harness.catalog.create("issuer", {
        "name": "keycloak", "issuer": ISSUER, "public_key": pem, "audiences": [AUDIENCE], "algorithms": ["ES256"],
        "leeway": 0, "groups_claim": "realm_access.roles", "admin_value": "modeldex-admin",
        "default_group": "only-a", "rate_limit": "2/m", "subject_claim": "preferred_username"})
    yield harness
    harness.stop()


def token(key: ec.EllipticCurvePrivateKey, user: str = "ada", roles: list[str] | None = None,
          lifetime: float = 300, **claims: Any) -> str:
    now = time.time()
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "f81d4fae", "preferred_username": user, "iat": int(now),
            "exp": int(now + lifetime), "realm_access": {"roles": roles or []}, **claims}
    return jwt.encode(body, key, algorithm="ES256")


async def listed(harness: Harness, bearer_token: str) -> list[str]:
    response = await harness.request("GET", "/v1/models", bearer_token)
    assert response.status_code == 200, response.text
    return [m["id"] for m in response.json()["data"] if m["id"].startswith("team/")]


async def test_claims_make_the_policy_the_scope_and_the_name(harness: Harness, signing_key: Any) -> None:
    # No role naming a modeldex group: the issuer's default group.
    assert await listed(harness, token(signing_key, "ada")) == ["team/model-a"]
    # A role naming a group (nested claim path realm_access.roles); unknown roles are ignored.
    assert await listed(harness, token(signing_key, "bob", ["team", "offline_access"])) == ["team/model-b", "team/model-a"]
    admin = token(signing_key, "root", ["modeldex-admin"])
    created = await harness.request("POST", "/v1/admin/aliases", admin, json={"id": "a", "target": "team/model-a"})
    assert created.status_code == 201, created.text
    assert harness.catalog.changes()[-1].actor == "jwt:keycloak:root"
    refused = await harness.request("GET", "/v1/admin/issuers", token(signing_key, "ada"))
    error_of(refused, 403, "insufficient_permissions")


async def test_rate_limits_count_per_subject_with_the_issuer_default(harness: Harness, signing_key: Any) -> None:
    ada = token(signing_key, "ada")
    statuses = [(await harness.request("GET", "/v1/models", ada)).status_code for _ in range(3)]
    other = await harness.request("GET", "/v1/models", token(signing_key, "grace"))
    again = await harness.request("GET", "/v1/models", token(signing_key, "ada", lifetime=200))  # another token, same subject

    assert statuses == [200, 200, 429]
    assert other.status_code == 200
    assert again.status_code == 429


async def test_a_remembered_answer_ends_with_the_token(harness: Harness, signing_key: Any) -> None:
    harness.catalog.update("issuer", "keycloak", {"rate_limit": "unlimited"})  # answers are remembered
    # Its `exp` in whole seconds: 2 to 3 s from now, time enough for the two requests on a loaded machine (with
    # 1.5 s it was 0.5 to 1.5 s).
    short = token(signing_key, "ada", lifetime=3)
    first = await harness.request("GET", "/v1/models/team/model-a", short)
    second = await harness.request("GET", "/v1/models/team/model-a", short)
    assert first.status_code == second.status_code == 200
    await asyncio.sleep(max(0.0, jwt.decode(short, options={"verify_signature": False})["exp"] - time.time()) + 0.1)

    error_of(await harness.request("GET", "/v1/models/team/model-a", short), 401, "invalid_api_key")


async def test_removing_the_issuer_stops_cached_tokens(harness: Harness, signing_key: Any) -> None:
    harness.catalog.update("issuer", "keycloak", {"rate_limit": "unlimited"})
    cached = token(signing_key, "ada")
    assert (await harness.request("GET", "/v1/models", cached)).status_code == 200

    harness.catalog.delete("issuer", "keycloak")

    error_of(await harness.request("GET", "/v1/models", cached), 401, "invalid_api_key")


async def test_keys_and_other_bearers_are_unchanged(harness: Harness, signing_key: Any) -> None:
    key = harness.key("reader")
    assert (await harness.request("GET", "/v1/models/team/model-b", key)).status_code == 200
    for other in ("not-a-jwt", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", key + "x"):
        error_of(await harness.request("GET", "/v1/models", other), 401, "invalid_api_key")
    hs256 = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "exp": time.time() + 60, "preferred_username": "eve"},
                       "s" * 32, algorithm="HS256")
    error_of(await harness.request("GET", "/v1/models", hs256), 401, "invalid_api_key")
    # An issuer accepting RS256 too, whose (EC) key a token claims to be RS256: refused, not a 500.
    harness.catalog.update("issuer", "keycloak", {"algorithms": ["ES256", "RS256"]})
    rsa_signed = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "exp": time.time() + 60, "preferred_username": "eve"},
                            rsa.generate_private_key(public_exponent=65537, key_size=2048), algorithm="RS256")
    error_of(await harness.request("GET", "/v1/models", rsa_signed), 401, "invalid_api_key")
    assert "is not a key for RS256" in harness.app.tokens.explain(rsa_signed)["reason"]


async def test_explain_reports_acceptance_or_the_reason(harness: Harness, signing_key: Any) -> None:
    tokens = harness.app.tokens
    accepted = tokens.explain(token(signing_key, "bob", ["team", "modeldex-admin"]))
    expired = tokens.explain(token(signing_key, "bob", lifetime=-10))
    other_audience = tokens.explain(token(signing_key, aud="someone-else"))

    assert accepted == {**accepted, "accepted": True, "caller": "keycloak:bob", "scope": "admin",
                        "policy": {"groups": ["team"], "patterns": []}, "rate_limit": "2/m"}
    assert (expired["accepted"], expired["reason"]) == (False, "expired")
    assert other_audience["reason"].startswith("wrong audience")


@pytest.mark.parametrize(("fields", "field"), [
    ({"algorithms": ["HS256"]}, "algorithms.0"),
    ({"algorithms": ["none"]}, "algorithms.0"),
    ({"jwks_url": "https://x.test/jwks"}, None),  # beside public_key: one source of keys
    ({"default_group": "nobody"}, "default_group"),
    ({"audiences": []}, "audiences"),
    ({"issuer": "ftp://x.test"}, "issuer"),
    ({"rate_limit": "5/0d"}, "rate_limit"),
    ({"public_key": "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----"}, "public_key"),
])
def test_issuer_configuration_is_checked(harness: Harness, fields: dict[str, Any], field: str | None) -> None:
    before = harness.catalog.get("issuer", "keycloak")
    with pytest.raises(InvalidInput) as raised:
        harness.catalog.update("issuer", "keycloak", fields)
    if field is not None:
        assert raised.value.field == field
    assert harness.catalog.get("issuer", "keycloak") == before


def test_issuers_round_trip_through_catalog_files(harness: Harness) -> None:
    document = harness.catalog.export()
    assert [i["name"] for i in document["issuers"]] == ["keycloak"]
    harness.catalog.delete("issuer", "keycloak")

    _version, planned = harness.catalog.apply(document)

    assert [p.line() for p in planned if p.kind == "issuer"] == ["+ issuer keycloak"]
    assert harness.catalog.export() == document


def test_claim_paths_reach_nested_and_dotted_names() -> None:
    claims = {"sub": "s", "realm_access": {"roles": ["a"]},
              "kubernetes.io": {"namespace": "ml-team", "serviceaccount": {"name": "trainer"}}}
    assert claim(claims, "sub") == "s"
    assert claim(claims, "realm_access.roles") == ["a"]
    assert claim(claims, "kubernetes.io.namespace") == "ml-team"  # Kubernetes service-account tokens
    assert claim(claims, "kubernetes.io.serviceaccount.name") == "trainer"
    assert claim(claims, "realm_access.nothing") is None and claim(claims, "nothing.at.all") is None


def test_the_cache_of_verified_tokens_is_bounded(signing_key: Any) -> None:
    pem = signing_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    issuer = Issuer(name="k", issuer=ISSUER, public_key=pem, audiences=[AUDIENCE], algorithms=["ES256"])
    issuers = {"k": issuer}
    tokens = IssuerTokens(lambda: (issuers, ()), max_cached=4)
    try:
        minted = [token(signing_key, f"user-{n}") for n in range(10)]
        callers = [tokens.caller(t) for t in minted]
        assert all(c is not None for c in callers)
        assert len(tokens._cache) <= 4
        assert tokens.caller(minted[0]) == callers[0]  # forgotten or not, still accepted
    finally:
        tokens.close()
