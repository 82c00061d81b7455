"""Tokens from identity providers, edge cases in process: an issuer configured with a static public key
(no provider process needed), claims mapped to scope, policy and rate limits, answers remembered only
while the token stands, and the rules an issuer's configuration follows. The real provider is in
test_identity.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from modeldex.catalog.entities import STORED
from modeldex.catalog.errors import InvalidInput
from modeldex.catalog.issuers import Issuer
from modeldex.identity.credentials import IssuerTokens
from modeldex.identity.keysets import KeySets, parse_jwks
from modeldex.identity.tokens import claim

from .conftest import wait_until
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


async def test_tokens_typed_as_another_kind_of_jwt_are_refused(harness: Harness, signing_key: Any) -> None:
    """A logout token, a security event or a DPoP proof is signed with the provider's keys too, sometimes for
    the same audience: its explicit `typ` keeps it from standing for its subject here (RFC 8725, 3.11)."""
    def typed(typ: str | None) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "preferred_username": "ada", "iat": now, "exp": now + 300}
        return jwt.encode(claims, signing_key, algorithm="ES256", headers={"typ": typ} if typ else None)

    harness.catalog.update("issuer", "keycloak", {"rate_limit": "unlimited"})
    for typ in ("logout+jwt", "secevent+jwt", "application/logout+jwt", "dpop+jwt", "Logout+JWT"):
        error_of(await harness.request("GET", "/v1/models", typed(typ)), 401, "invalid_api_key")
        assert harness.app.tokens.explain(typed(typ))["reason"] == (
            f"the token's typ {typ!r} says it is not an access token")
    for typ in (None, "JWT", "at+jwt", "application/at+jwt", "AT+JWT"):
        assert (await harness.request("GET", "/v1/models", typed(typ))).status_code == 200, typ


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
    ({"algorithms": ["RS256", "EdDSA"]}, None),  # its (P-256) public key verifies ES256 only
])
def test_issuer_configuration_is_checked(harness: Harness, fields: dict[str, Any], field: str | None) -> None:
    before = harness.catalog.get("issuer", "keycloak")
    with pytest.raises(InvalidInput) as raised:
        harness.catalog.update("issuer", "keycloak", fields)
    if field is not None:
        assert raised.value.field == field
    assert harness.catalog.get("issuer", "keycloak") == before


def test_a_public_key_must_verify_one_of_the_issuers_algorithms(signing_key: Any, tmp_path: Any) -> None:
    """`issuers add --public-key ec.pem` without `--algorithm ES256` (the default is RS256) was accepted, and
    then refused every token, saying why only in the log."""
    pem = signing_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    p521 = ec.generate_private_key(ec.SECP521R1()).public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    fields = {"name": "k8s", "issuer": ISSUER, "audiences": [AUDIENCE]}
    with pytest.raises(ValueError, match=r"the public key verifies ES256, not RS256: every token would be "
                                         r"refused \(algorithms must include ES256\)"):
        Issuer.model_validate({**fields, "public_key": pem})
    with pytest.raises(ValueError, match="verifies no algorithm modeldex accepts"):  # P-521: ES512 is not one
        Issuer.model_validate({**fields, "public_key": p521, "algorithms": ["ES256", "ES384"]})
    assert Issuer.model_validate({**fields, "public_key": p384, "algorithms": ["RS256", "ES384"]})
    # One stored by an earlier modeldex still loads (its tokens are refused, and the log says why).
    assert Issuer.model_validate({**fields, "public_key": pem}, context=STORED).algorithms == ("RS256",)
    harness = Harness(tmp_path)
    try:
        with pytest.raises(InvalidInput, match="algorithms must include ES256"):
            harness.catalog.create("issuer", {**fields, "public_key": pem})
    finally:
        harness.stop()


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


class Provider:
    """A provider's key-set address on a port of its own (in this process): `routes` says, per path, what
    the handler does (write a document, trickle, pour); `sent` counts the body bytes it got out."""

    def __init__(self) -> None:
        self.routes: dict[str, Any] = {}
        self.sent = 0
        self.stop = threading.Event()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                route = provider.routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                with contextlib.suppress(OSError):  # the client hung up: what a bounded reader does
                    route(self)

            def send(self, data: bytes) -> None:
                self.wfile.write(data)
                self.wfile.flush()
                provider.sent += len(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def document(self, path: str, document: dict[str, Any]) -> None:
        body = json.dumps(document).encode()

        def answer(handler: Any) -> None:
            handler.send_response(200)
            handler.send_header("content-type", "application/json")
            handler.send_header("content-length", str(len(body)))
            handler.end_headers()
            handler.send(body)

        self.routes[path] = answer

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def provider() -> Iterator[Provider]:
    provider = Provider()
    yield provider
    provider.close()


def test_key_set_fetches_are_bounded_in_size_and_time(provider: Provider) -> None:
    def trickle(handler: Any) -> None:  # a byte every 0.1 s, for as long as the client reads
        handler.send_response(200)
        handler.send_header("content-type", "application/json")
        handler.end_headers()
        handler.send(b'{"keys": [')
        while not provider.stop.is_set():
            handler.send(b" ")
            time.sleep(0.1)

    def pour(handler: Any) -> None:  # 64 MB, no Content-Length
        handler.send_response(200)
        handler.send_header("content-type", "application/json")
        handler.end_headers()
        handler.send(b'{"keys": [], "padding": "')
        for _ in range(64):
            handler.send(b"x" * 1_000_000)
        handler.send(b'"}')

    provider.routes["/slow"], provider.routes["/huge"] = trickle, pour
    slow = Issuer(name="slow", issuer="https://slow.test", jwks_url=provider.url + "/slow", audiences=["a"])
    huge = Issuer(name="huge", issuer="https://huge.test", jwks_url=provider.url + "/huge", audiences=["a"])
    sets = KeySets(timeout=0.5)
    try:
        sets.track([slow, huge])
        holders = [sets.holder(slow), sets.holder(huge)]
        for holder in holders:
            assert holder is not None
            refresh = threading.Thread(target=sets.refresh_now, args=(holder, True), daemon=True)
            refresh.start()
            refresh.join(timeout=5)
            # (httpx's timeouts are per read: the trickle held the refresh, and its lock, for as long as it
            # went on; the pour was read whole, 64 MB in memory, before its size was looked at)
            assert not refresh.is_alive(), holder.source.jwks_url
        assert holders[0] is not None and "took more than 0.5 s" in str(holders[0].last_error)
        assert holders[1] is not None and "more than 1000000 bytes" in str(holders[1].last_error)
        assert provider.sent < 32_000_000
    finally:
        provider.stop.set()
        sets.close()


def test_a_discovery_document_naming_another_issuer_says_which(provider: Provider) -> None:
    # Auth0's issuer ends with a slash; configured without it, every refresh failed without saying so.
    provider.document("/.well-known/openid-configuration", {"issuer": provider.url + "/",
                                                             "jwks_uri": provider.url + "/jwks"})
    issuer = Issuer(name="auth0", issuer=provider.url, audiences=["a"])
    sets = KeySets(timeout=2)
    try:
        sets.track([issuer])
        holder = sets.holder(issuer)
        assert holder is not None
        sets.refresh_now(holder, force=True)
        assert holder.keyset is None
        assert holder.last_error == (f"the discovery document names another issuer ('{provider.url}/', "
                                     f"not '{provider.url}')")
    finally:
        sets.close()


def test_a_key_set_with_several_keys_under_one_kid_or_none(provider: Provider) -> None:
    """A provider may publish one RSA key for RS256 and for PS256 under one kid, an RSA and an EC key under
    another, or keys without kids: the token's algorithm picks the key (as panva's jose does), where the
    last JWK of a kid stood for all and tokens signed with the others were refused."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_jwk = RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)
    ec_jwk = ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True)
    provider.document("/jwks", {"keys": [
        {**rsa_jwk, "kid": "both", "alg": "RS256", "use": "sig"}, {**rsa_jwk, "kid": "both", "alg": "PS256", "use": "sig"},
        {**rsa_jwk, "kid": "mixed", "use": "sig"}, {**ec_jwk, "kid": "mixed", "use": "sig"}]})
    provider.document("/bare", {"keys": [{**rsa_jwk, "use": "sig"}, {**ec_jwk, "use": "sig"}]})
    algorithms = ["RS256", "PS256", "ES256"]
    issuers = {"idp": Issuer(name="idp", issuer=ISSUER, jwks_url=provider.url + "/jwks", audiences=[AUDIENCE],
                             algorithms=algorithms),
               "bare": Issuer(name="bare", issuer=ISSUER + "/bare", jwks_url=provider.url + "/bare",
                              audiences=[AUDIENCE], algorithms=algorithms)}
    tokens = IssuerTokens(lambda: (issuers, ()))

    def signed(key: Any, algorithm: str, kid: str | None, iss: str = ISSUER) -> str:
        claims = {"iss": iss, "aud": AUDIENCE, "sub": f"{kid}-{algorithm}", "exp": int(time.time()) + 300}
        return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid} if kid else None)

    try:
        tokens.prefetch()
        holder = tokens.keysets.holder(issuers["idp"])
        assert holder is not None and wait_until(lambda: holder.keyset is not None, 5) is not None
        bare = tokens.keysets.holder(issuers["bare"])
        assert bare is not None and wait_until(lambda: bare.keyset is not None, 5) is not None
        for key, algorithm, kid, iss in [
                (rsa_key, "RS256", "both", ISSUER), (rsa_key, "PS256", "both", ISSUER),
                (rsa_key, "RS256", "mixed", ISSUER), (ec_key, "ES256", "mixed", ISSUER),
                (rsa_key, "RS256", None, ISSUER + "/bare"), (ec_key, "ES256", None, ISSUER + "/bare")]:
            minted = signed(key, algorithm, kid, iss)
            assert tokens.explain(minted)["accepted"] is True, (algorithm, kid, tokens.explain(minted))
            caller = tokens.caller(minted)
            assert caller is not None and caller.still_valid is not None and caller.still_valid(), (algorithm, kid)
        # Still refused: another key under a known kid, and no kid where two RSA keys could be meant.
        assert tokens.explain(signed(ec.generate_private_key(ec.SECP256R1()), "ES256", "mixed"))["reason"] == (
            "the signature does not verify")
        assert tokens.explain(signed(ec_key, "ES256", "both"))["reason"] == (
            "issuer 'idp': no key with kid 'both' is for ES256")
        assert tokens.explain(signed(rsa_key, "RS256", None))["reason"].startswith(
            "issuer 'idp': the token names no kid, and its key set holds several keys for RS256")
    finally:
        tokens.close()


def test_a_kid_moving_to_another_type_of_key_is_picked_up() -> None:
    """A kid that named an Ed25519 key and now names an RSA key: the refresh failed on comparing the two
    (`public_bytes(Raw)` of an RSA key raises ValueError), and the old set was kept for good."""
    ed_jwk = OKPAlgorithm.to_jwk(ed25519.Ed25519PrivateKey.generate().public_key(), as_dict=True)
    rsa_jwk = RSAAlgorithm.to_jwk(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key(),
                                  as_dict=True)
    first = parse_jwks({"keys": [{**ed_jwk, "kid": "k"}]}, None, 0.0)
    second = parse_jwks({"keys": [{**rsa_jwk, "kid": "k"}]}, first, 1.0)
    back = parse_jwks({"keys": [{**ed_jwk, "kid": "k"}]}, second, 2.0)

    assert [key.algorithm for key in second.keys["k"]] == [None]
    assert second.find("k", "RS256") is not None and second.find("k", "EdDSA") is None
    assert back.find("k", "EdDSA") is not None
