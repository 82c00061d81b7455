"""Table definitions (SQLAlchemy Core). Changes here need a migration in `migrations/versions/`."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Boolean, Column, Float, Index, Integer, MetaData, String, Table, Text, text

metadata = MetaData()

models = Table(
    "models",
    metadata,
    Column("id", String(256), primary_key=True),
    Column("created", BigInteger, nullable=False),
    Column("owned_by", String(128), nullable=False),
    Column("meta", JSON, nullable=True),
    Column("revision", BigInteger, nullable=False, server_default=text("1")),
    Column("source", String(64), nullable=True, index=True),  # the upstream a discovered model came from
    Column("stale_since", Float, nullable=True),
)

aliases = Table(
    "aliases",
    metadata,
    Column("id", String(256), primary_key=True),
    Column("target", String(256), nullable=False),
    Column("hidden", Boolean, nullable=False, server_default=text("false")),
    Column("revision", BigInteger, nullable=False, server_default=text("1")),
)

groups = Table(
    "groups",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("members", JSON, nullable=False),
    Column("description", Text, nullable=True),
    Column("revision", BigInteger, nullable=False, server_default=text("1")),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False),
    Column("scope", String(16), nullable=False),
    Column("lookup_id", String(32), nullable=False, unique=True),
    Column("secret_hash", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
    Column("policy", JSON, nullable=True),
    Column("revision", BigInteger, nullable=False, server_default=text("1")),
    Column("rate_limit", String(32), nullable=True),
)

# A name belongs to at most one active key; revoked keys keep theirs for the record.
Index(
    "ux_api_keys_active_name",
    api_keys.c.name,
    unique=True,
    sqlite_where=api_keys.c.revoked_at.is_(None),
    postgresql_where=api_keys.c.revoked_at.is_(None),
)

# A single row: the version every write increments, and whether the seed models were added.
catalog_state = Table(
    "catalog_state",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version", BigInteger, nullable=False, server_default=text("0")),
    Column("seeded", Boolean, nullable=False, server_default=text("false")),
)

# The audit trail and change feed: one row per changed entity, at the version its write produced.
changes = Table(
    "changes",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("version", BigInteger, nullable=False, index=True),
    Column("at", Float, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("entity", String(16), nullable=False),
    Column("entity_id", String(256), nullable=False),
    Column("op", String(8), nullable=False),
    Column("before", JSON, nullable=True),
    Column("after", JSON, nullable=True),
)

upstreams = Table(
    "upstreams",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("base_url", Text, nullable=False),
    Column("api_key_env", String(128), nullable=True),  # the variable's name: never the key
    Column("prefix", String(64), nullable=True),
    Column("include", JSON, nullable=False),
    Column("exclude", JSON, nullable=False),
    Column("interval", Integer, nullable=False),
    Column("grace", Integer, nullable=False),
    Column("timeout", Integer, nullable=False),
    Column("owned_by", String(128), nullable=True),
    Column("revision", BigInteger, nullable=False, server_default=text("1")),
    Column("protocols", JSON, nullable=True),  # NULL: OpenAI's API at base_url
    Column("routing_only", Boolean, nullable=False, server_default=text("false")),
)

# Trusted identity providers (catalog/issuers.py): the name, and the rest of the configuration as one
# JSON document (validated by the entity on the way in and out; no query looks inside it).
issuers = Table(
    "issuers",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("config", JSON, nullable=False),
    Column("revision", BigInteger, nullable=False, server_default=text("1")),
)

# How polling each upstream goes, and the lease that lets one process at a time poll it. Not catalog
# content: it changes on every poll, so it has no revision and no change-feed entries.
upstream_health = Table(
    "upstream_health",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("last_attempt_at", Float, nullable=True),
    Column("last_success_at", Float, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("last_error_at", Float, nullable=True),
    Column("latency_ms", Float, nullable=True),
    Column("model_count", Integer, nullable=False, server_default=text("0")),
    Column("failing_since", Float, nullable=True),
    Column("shadowed", JSON, nullable=True),
    Column("next_poll_at", Float, nullable=True),  # NULL: due now
    Column("lease_owner", String(128), nullable=True),
    Column("lease_until", Float, nullable=True),
    # A salted fingerprint of the key the last poll sent (discovery/credentials.py), never the key.
    Column("credential", String(200), nullable=True),
    # The last polls, oldest first, as [[at, latency_ms or null, ok], ...]: the console's latency chart.
    Column("latency_history", JSON, nullable=True),
)

# Web console sessions (console/sessions.py): the SHA-256 of the cookie's secret, never the secret; what
# the session acts as (an API key's lookup id, or a token's subject); revoked by deleting the row, so
# signing out holds on every worker and replica.
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("csrf", String(64), nullable=False),
    Column("credential", String(32), nullable=False),
    Column("subject", String(256), nullable=False),
    Column("name", String(256), nullable=False),
    Column("rate_limit", String(32), nullable=True),  # a token's (an API key's comes from the key table)
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False, index=True),
    Column("sealed_token", Text, nullable=True),  # a token session's token, sealed (console/sessions.py)
)
