"""Initial schema: models, API keys, and the catalog version row.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.String(256), primary_key=True),
        sa.Column("created", sa.BigInteger, nullable=False),
        sa.Column("owned_by", sa.String(128), nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("lookup_id", sa.String(32), nullable=False, unique=True),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("revoked_at", sa.BigInteger, nullable=True),
    )
    op.create_index(
        "ux_api_keys_active_name",
        "api_keys",
        ["name"],
        unique=True,
        sqlite_where=sa.text("revoked_at IS NULL"),
        postgresql_where=sa.text("revoked_at IS NULL"),
    )
    catalog_state = op.create_table(
        "catalog_state",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("seeded", sa.Boolean, nullable=False, server_default=sa.text("false")),
    )
    op.bulk_insert(catalog_state, [{"id": 1, "version": 0, "seeded": False}])


def downgrade() -> None:
    op.drop_table("catalog_state")
    op.drop_index("ux_api_keys_active_name", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("models")
