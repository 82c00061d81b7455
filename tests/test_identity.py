"""Tokens from an identity provider, beside API keys: a real OpenID Connect provider (oidc-provider, in
Node) issues them, the official openai SDK presents them, and attackers' forgeries are refused.

The tests of this module share one provider and one server and run in order: the last ones rotate the
provider's keys, take it down, and remove the issuer.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from modeldex.catalog.issuers import Issuer
from modeldex.identity.keysets import KeySets

from .conftest import SEED_IDS, Server, create_key, new_database, run_cli, wait_until
from .fake_upstream import FakeUpstream
from .identity_provider import AUDIENCE, Client, IdentityProvider, b64, forge, new_key

pytestmark = pytest.mark.peer  # a peer process: the identity provider

ADMIN_VALUE = "modeldex-admins"
TEAM_MODELS = ["MiniMax-M2.5", "MiniMax-M2.5-highspeed"]


class Setup:
    def __init__(self, tmp: Path, db_url: str) -> None:
        self.db_url = db_url
        self.idp = IdentityProvider(tmp, [
            Client("svc-rs", "RS256", ["team-a", "not-a-modeldex-group"]),
            Client("svc-es", "ES256"),
            Client("svc-ed", "EdDSA", [ADMIN_VALUE]),
        ], [new_key("rsa-1", "RS256"), new_key("ec-1", "ES256"), new_key("ed-1", "EdDSA")])
        self.read_key = create_key(db_url, "reader", "read")
        self.cli("groups", "set", "team-a", "MiniMax-M2.5*")
        self.cli("issuers", "add", "corp", "--issuer", self.idp.issuer, "--audience", AUDIENCE,
                 "--algorithm", "RS256", "--algorithm", "ES256", "--algorithm", "EdDSA",
                 "--admin-value", ADMIN_VALUE)
        self.upstream = FakeUpstream()  # for the inference routes: the gateway finds callers the same way
        self.cli("upstreams", "add", "fake", "--base-url", self.upstream.base_url, "--routing-only")
        self.cli("routes", "add", "MiniMax-M2.5", "fake", "--upstream-model", "fake-chat")
        self.cli("routes", "add", "MiniMax-M3", "fake", "--upstream-model", "fake-chat")
        self.server = Server(db_url, tmp / "server.log", "--auth-failure-limit", "off", "--jwks-min-refresh", "1",
                             "--max-header-bytes", "65536")  # room for a token past the token bound

    def cli(self, *args: str, check: bool = True) -> Any:
        return run_cli(self.db_url, *args, check=check)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {"iss": self.idp.issuer, "aud": AUDIENCE, "sub": "forged-" + uuid.uuid4().hex[:6],
                  "iat": now, "exp": now + 300}
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def status(self, token: str) -> httpx.Response:
        return self.server.get("/v1/models/MiniMax-M3", token)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("identity")
    setup = Setup(tmp, new_database("sqlite", tmp, request))
    yield setup
    setup.server.stop()
    setup.idp.stop()
    setup.upstream.close()


def models(server: Server, token: str) -> list[str]:
    return [model.id for model in server.client(token).models.list().data]


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_keys_are_fetched_before_the_first_token(setup: Setup) -> None:
    # The server started with the issuer configured: its keys are fetched with no token asking.
    assert wait_until(lambda: setup.idp.jwks_requests() >= 1, 5) is not None


@pytest.mark.parametrize("client_id", ["svc-rs", "svc-es", "svc-ed"])
def test_provider_tokens_list_and_retrieve_through_the_sdk(setup: Setup, client_id: str) -> None:
    token = setup.idp.token(client_id)
    client = setup.server.client(token)

    listed = models(setup.server, token)

    if client_id == "svc-rs":  # its groups claim names modeldex group team-a (and one modeldex lacks)
        assert listed == TEAM_MODELS
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("MiniMax-M3")
        assert client.models.retrieve("MiniMax-M2.5").id == "MiniMax-M2.5"
    else:  # no group: the issuer has no default group, so all models
        assert [m for m in SEED_IDS if m in listed] == SEED_IDS
        assert client.models.retrieve("MiniMax-M3").id == "MiniMax-M3"
    assert client.models.retrieve("MiniMax-M2.5").owned_by == "minimax"
    # The same token again: answered from the cache of verified tokens, the same way.
    assert models(setup.server, token) == listed


def test_provider_tokens_reach_the_inference_routes_under_their_policy(setup: Setup) -> None:
    token = setup.idp.token("svc-rs")  # team-a: MiniMax-M2.5*
    client = setup.server.client(token)

    completion = client.chat.completions.create(model="MiniMax-M2.5", messages=[{"role": "user", "content": "hi"}])

    assert completion.choices[0].message.content == "hello from fake"
    with pytest.raises(openai.NotFoundError):  # routed, but outside its policy
        client.chat.completions.create(model="MiniMax-M3", messages=[{"role": "user", "content": "hi"}])
    assert len(setup.upstream.posts) == 1
    [(_path, headers, _body)] = setup.upstream.posts
    assert token not in json.dumps(headers)  # the caller's token never goes upstream


def test_api_keys_keep_working_beside_tokens(setup: Setup) -> None:
    assert [m for m in models(setup.server, setup.read_key) if m in SEED_IDS] == SEED_IDS
    assert_refused(setup.server.get("/v1/models", "sk-" + "a" * 40))  # an opaque unknown key: 401 as before


def test_admin_claim_reaches_the_admin_api_and_names_the_actor(setup: Setup) -> None:
    admin = setup.idp.token("svc-ed")
    reader = setup.idp.token("svc-es")
    http = setup.server.http
    base = setup.server.base_url

    listed = http.get(base + "/v1/admin/issuers", headers={"Authorization": f"Bearer {admin}"})
    refused = http.get(base + "/v1/admin/issuers", headers={"Authorization": f"Bearer {reader}"})
    created = http.post(base + "/v1/admin/models", headers={"Authorization": f"Bearer {admin}"},
                        json={"id": "jwt-made-model"})

    assert listed.status_code == 200 and [i["name"] for i in listed.json()["data"]] == ["corp"]
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "insufficient_permissions"
    assert created.status_code == 201, created.text
    feed = http.get(base + "/v1/admin/changes", headers={"Authorization": f"Bearer {admin}"}).json()["data"]
    assert feed[-1]["id"] == "jwt-made-model"
    assert feed[-1]["actor"] == "jwt:corp:svc-ed"
    # The SDK's delete (a Models route) with the admin token, too.
    assert setup.server.client(admin).models.delete("jwt-made-model").deleted is True


def test_attacks_are_refused_and_the_log_says_why(setup: Setup) -> None:
    rsa = setup.idp.key("RS256")
    public_pem = rsa.public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    good = setup.claims()
    now = int(time.time())
    genuine = rsa.sign(good)
    header_b64, payload_b64, signature_b64 = genuine.split(".")
    tampered_claims = {**good, "sub": "someone-else", "groups": [ADMIN_VALUE]}
    tampered = f"{header_b64}.{b64(json.dumps(tampered_claims).encode())}.{signature_b64}"  # only the payload changed
    attacks = {
        "alg none": forge({"alg": "none", "typ": "JWT"}, {**good, "groups": [ADMIN_VALUE]}),
        "HS256 with the public key": forge({"alg": "HS256", "kid": rsa.kid}, good, hmac_key=public_pem),
        "expired": rsa.sign(setup.claims(iat=now - 3600, exp=now - 600)),
        "not yet valid": rsa.sign(setup.claims(nbf=now + 600)),
        "issued in the future": rsa.sign(setup.claims(iat=now + 600, exp=now + 900)),
        "wrong audience": rsa.sign(setup.claims(aud="https://someone-else.test")),
        "wrong issuer": rsa.sign(setup.claims(iss="https://evil.test")),
        "no expiry": rsa.sign(setup.claims(exp=None)),
        "tampered payload": tampered,
        "signed by another key with the provider's kid": new_key(rsa.kid, "RS256").sign(good),
    }
    assert setup.status(genuine).status_code == 200  # the forgeries below differ from it in one way each

    for name, token in attacks.items():
        response = setup.status(token)
        assert_refused(response)
        assert token not in response.text, name

    log = setup.server.log()
    for reason in ("algorithm 'none' is not one issuer 'corp' accepts", "algorithm 'HS256' is not one",
                   "expired", "not yet valid", "wrong audience", "no configured issuer has iss 'https://evil.test'",
                   "has no 'exp' claim", "the signature does not verify"):
        assert reason in log, reason
    assert signature_b64 not in log and payload_b64 not in log  # no token in the log


def test_oversized_tokens_are_refused_without_decoding(setup: Setup) -> None:
    rsa = setup.idp.key("RS256")
    large = rsa.sign(setup.claims(padding="x" * 20_000))  # valid, but past the token length bound
    huge = "eyJ" + "A" * 1_000_000 + ".e30.x"  # 1 MB: granian itself refuses such headers (431, no body)

    assert_refused(setup.status(large))
    response = setup.server.http.get(setup.server.base_url + "/v1/models", timeout=10,
                                     headers={"Authorization": f"Bearer {huge}"})
    assert response.status_code == 431
    assert "longer than 16384 characters" in setup.server.log()
    assert setup.status(rsa.sign(setup.claims())).status_code == 200  # and the server carries on


def test_unknown_kid_flood_costs_the_provider_few_requests(setup: Setup) -> None:
    rsa = setup.idp.key("RS256")
    before = setup.idp.jwks_requests()
    started = time.monotonic()

    for n in range(60):
        forged = new_key(f"made-up-{n}", "RS256")
        assert_refused(setup.status(forged.sign(setup.claims())))
    elapsed = time.monotonic() - started

    fetched = setup.idp.jwks_requests() - before
    # At most one refresh per --jwks-min-refresh (1 s here) however many made-up kids arrive.
    assert 1 <= fetched <= elapsed / 1.0 + 2, (fetched, elapsed)
    assert setup.status(rsa.sign(setup.claims())).status_code == 200  # real tokens unaffected


def test_auth_explain_says_who_or_why_not(setup: Setup) -> None:
    token = setup.idp.token("svc-rs")
    expired = setup.idp.key("RS256").sign(setup.claims(iat=int(time.time()) - 900, exp=int(time.time()) - 600))

    accepted = setup.cli("auth", "explain", token)
    refused = setup.cli("auth", "explain", expired, check=False)
    over_http = setup.server.http.post(setup.server.base_url + "/v1/admin/auth/explain", json={"token": token},
                                       headers={"Authorization": f"Bearer {setup.idp.token('svc-ed')}"})

    report = json.loads(accepted.stdout)
    assert report["accepted"] is True
    assert report["caller"] == "corp:svc-rs" and report["actor"] == "jwt:corp:svc-rs"
    assert report["scope"] == "read"
    assert report["policy"] == {"groups": ["team-a"], "patterns": []}
    assert refused.returncode == 1
    assert json.loads(refused.stdout) == {**json.loads(refused.stdout), "accepted": False, "reason": "expired"}
    assert over_http.status_code == 200 and over_http.json()["caller"] == "corp:svc-rs"


def test_key_rotation_new_keys_verify_and_removed_keys_stop(setup: Setup) -> None:
    old_token = setup.idp.token("svc-rs")
    assert setup.status(old_token).status_code in (200, 404)  # verified and cached (404: not in its groups)
    assert models(setup.server, old_token) == TEAM_MODELS

    setup.idp.rotate([new_key("rsa-2", "RS256"), new_key("ec-2", "ES256"), new_key("ed-2", "EdDSA")])
    new_token = setup.idp.token("svc-rs")
    time.sleep(1.1)  # past --jwks-min-refresh since the last refresh

    assert models(setup.server, new_token) == TEAM_MODELS  # unknown kid: one refresh, then accepted
    with pytest.raises(openai.AuthenticationError):  # its key left the set: the cached token stops too
        models(setup.server, old_token)


def test_provider_down_cached_keys_keep_working_and_nothing_hangs(setup: Setup) -> None:
    key = setup.idp.key("ES256")
    setup.idp.stop()
    try:
        fresh = key.sign(setup.claims())  # never seen by the server: verified with the cached key set
        assert setup.status(fresh).status_code == 200
        time.sleep(1.1)
        unknown = new_key("rotated-meanwhile", "ES256").sign(setup.claims())
        started = time.monotonic()
        response = setup.server.http.get(setup.server.base_url + "/v1/models", timeout=10,
                                         headers={"Authorization": f"Bearer {unknown}"})
        assert_refused(response)  # the refresh it triggers fails fast (connection refused) and is logged
        assert time.monotonic() - started < 10
        assert "key set refresh failed" in setup.server.log()
        assert setup.status(key.sign(setup.claims())).status_code == 200
    finally:
        setup.idp.start()


def test_removing_the_issuer_stops_its_tokens(setup: Setup) -> None:
    token = setup.idp.token("svc-es")
    assert setup.status(token).status_code == 200

    setup.cli("issuers", "remove", "corp")

    assert wait_until(lambda: setup.status(token).status_code == 401, 2.0) is not None
    listed = setup.cli("issuers", "list").stdout
    assert "corp" not in listed


def test_key_sets_follow_cache_headers_and_outlive_the_provider(tmp_path: Path) -> None:
    """The key sets' own machinery against a second provider that says `Cache-Control: max-age=1`: a
    rotation is picked up in the background with no token asking, and an outage keeps the last good set."""
    idp = IdentityProvider(tmp_path, [Client("c", "ES256")], [new_key("first", "ES256")], jwks_max_age=1)
    sets = KeySets(min_interval=0.5, max_interval=60, retry_interval=0.5)
    issuer = Issuer(name="x", issuer=idp.issuer, audiences=["a"], algorithms=["ES256"])
    try:
        sets.track([issuer])
        holder = sets.holder(issuer)
        assert holder is not None
        assert wait_until(lambda: holder.keyset is not None, 5) is not None
        assert holder.keyset is not None and set(holder.keyset.keys) == {"first"}

        idp.rotate([new_key("second", "ES256")])

        # Refreshed as the provider's max-age says (1 s), not after max_interval (60 s).
        assert wait_until(lambda: holder.keyset is not None and set(holder.keyset.keys) == {"second"}, 5) is not None
        idp.stop()
        assert wait_until(lambda: holder.last_error is not None, 5) is not None
        assert set(holder.keyset.keys) == {"second"}  # the last good set, kept
    finally:
        sets.close()
        idp.stop()


def test_issuers_add_refuses_bad_configuration_and_changes_nothing(setup: Setup, tmp_path: Path) -> None:
    pem = tmp_path / "key.pem"
    pem.write_bytes(setup.idp.key("ES256").public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    before = setup.cli("issuers", "list").stdout

    both = setup.cli("issuers", "add", "x", "--issuer", "https://x.test", "--audience", "a", "--jwks-url",
                     "https://x.test/jwks", "--public-key", str(pem), check=False)
    hmac = setup.cli("issuers", "add", "x", "--issuer", "https://x.test", "--audience", "a", "--algorithm", "HS256",
                     check=False)
    no_group = setup.cli("issuers", "add", "x", "--issuer", "https://x.test", "--audience", "a",
                         "--default-group", "nobody", check=False)
    static = setup.cli("issuers", "add", "static", "--issuer", "https://static.test", "--audience", "a",
                       "--public-key", str(pem), "--algorithm", "ES256")

    assert both.returncode == 2 and "alternatives" in both.stderr
    assert hmac.returncode == 2 and "HS256" in hmac.stderr
    assert no_group.returncode == 1 and "default_group: group 'nobody' does not exist" in no_group.stderr
    assert "keys: its public key" in static.stderr
    listed = setup.cli("issuers", "list").stdout
    assert [line.split()[0] for line in listed.splitlines()[1:]] == sorted(
        [line.split()[0] for line in before.splitlines()[1:]] + ["static"])
    setup.cli("issuers", "remove", "static")
