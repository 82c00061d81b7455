"""Table definitions (SQLAlchemy Core). Changes here need a migration in `migrations/versions/`."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, MetaData, String, Table, text

metadata = MetaData()

models = Table(
    "models",
    metadata,
    Column("id", String(256), primary_key=True),
    Column("created", BigInteger, nullable=False),
    Column("owned_by", String(128), nullable=False),
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
