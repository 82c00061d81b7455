"""A server started with a new upstream key polls that upstream at once (issue 14), not at its interval; one
started with the same key waits as before. What is stored of the key is a salted fingerprint, never the key."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from modeldex.discovery import credentials
from modeldex.store import open_store

from .conftest import dump_database, run_cli, wait_until
from .fake_upstream import FakeUpstream


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream([{"id": "rotated-model", "object": "model", "owned_by": "fake"}])
    yield upstream
    upstream.close()


def recorded_credential(db_url: str, upstream: str) -> str | None:
    """The fingerprint of the key the last recorded poll of `upstream` sent, as stored."""
    store = open_store(db_url)
    try:
        return store.upstream_credentials().get(upstream)
    finally:
        store.close()


def test_a_server_started_with_a_new_key_polls_at_once(db_url: str, start_server, fake: FakeUpstream,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    old_key, new_key = f"sk-old-{secrets.token_hex(12)}", f"sk-new-{secrets.token_hex(12)}"
    run_cli(db_url, "upstreams", "add", "rotating", "--base-url", fake.base_url, "--api-key-env", "ROTATING_KEY",
            "--interval", "1h")
    monkeypatch.setenv("ROTATING_KEY", old_key)
    server = start_server(db_url)
    assert wait_until(lambda: fake.requests >= 1, 10) is not None, "the first poll did not come"
    assert wait_until(lambda: "rotated-model" in run_cli(db_url, "models", "list").stdout, 15) is not None
    server.stop()

    # The same key: not due for an hour, so a restarted server leaves the upstream alone.
    server = start_server(db_url)
    assert wait_until(lambda: fake.requests > 1, 2.5) is None, "a restart with the same key polled again"
    server.stop()

    # A rotated key: the restarted server polls at once (its poller ticks every second), with the new key.
    monkeypatch.setenv("ROTATING_KEY", new_key)
    server = start_server(db_url)
    waited = wait_until(lambda: fake.requests > 1, 15)  # its interval is an hour
    assert waited is not None, "a restart with a new key did not poll before the interval"
    assert fake.authorizations[-1] == f"Bearer {new_key}"
    assert "credentials changed since the last poll: polling rotating now" in server.log()
    # The poll records its answer, then the health and the key's fingerprint, after the upstream answered: a
    # stop before it begins to record drops the answer (as a stopping server should). Wait for the fingerprint.
    assert wait_until(lambda: credentials.matches(recorded_credential(db_url, "rotating"), new_key), 15,
                      interval=0.1) is not None, "the poll with the new key was not recorded"

    # And then it waits its interval again: the fingerprint now is the new key's.
    server.stop()
    requests = fake.requests
    start_server(db_url)
    assert wait_until(lambda: fake.requests > requests, 2.5) is None, "the new key was not recorded"

    stored = dump_database(db_url)
    assert old_key not in stored and new_key not in stored
    assert old_key[7:] not in stored and new_key[7:] not in stored


def test_fingerprints_match_only_their_key() -> None:
    key = "sk-" + secrets.token_hex(8)
    stored = credentials.fingerprint(key)
    assert key not in stored and stored.startswith("pbkdf2-sha256$")
    assert credentials.matches(stored, key)
    assert not credentials.matches(stored, key + "x") and not credentials.matches(stored, None)
    assert credentials.matches(credentials.fingerprint(None), None)
    assert not credentials.matches(credentials.fingerprint(None), key)
    assert not credentials.matches(None, key) and not credentials.matches("garbage", key)
    # Salted: two processes (two salts) store different text for one key, and both match it.
    other = f"pbkdf2-sha256$1000$00ff${credentials._digest(key, bytes.fromhex('00ff'), 1000)}"
    assert other != stored and credentials.matches(other, key)
    assert credentials.current_key({"K": "  sk-1\n"}, "K") == "sk-1"
    assert credentials.current_key({"K": " "}, "K") is None and credentials.current_key({}, None) is None
