"""Metadata and revisions on models; aliases, groups, key policies; the change feed.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("meta", sa.JSON, nullable=True))
        batch.add_column(sa.Column("revision", sa.BigInteger, nullable=False, server_default=sa.text("1")))
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("policy", sa.JSON, nullable=True))
        batch.add_column(sa.Column("revision", sa.BigInteger, nullable=False, server_default=sa.text("1")))
    op.create_table(
        "aliases",
        sa.Column("id", sa.String(256), primary_key=True),
        sa.Column("target", sa.String(256), nullable=False),
        sa.Column("hidden", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("revision", sa.BigInteger, nullable=False, server_default=sa.text("1")),
    )
    op.create_table(
        "groups",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("members", sa.JSON, nullable=False),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("revision", sa.BigInteger, nullable=False, server_default=sa.text("1")),
    )
    op.create_table(
        "changes",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("entity", sa.String(16), nullable=False),
        sa.Column("entity_id", sa.String(256), nullable=False),
        sa.Column("op", sa.String(8), nullable=False),
        sa.Column("before", sa.JSON, nullable=True),
        sa.Column("after", sa.JSON, nullable=True),
    )
    op.create_index("ix_changes_version", "changes", ["version"])


def downgrade() -> None:
    op.drop_index("ix_changes_version", table_name="changes")
    op.drop_table("changes")
    op.drop_table("groups")
    op.drop_table("aliases")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("revision")
        batch.drop_column("policy")
    with op.batch_alter_table("models") as batch:
        batch.drop_column("revision")
        batch.drop_column("meta")
