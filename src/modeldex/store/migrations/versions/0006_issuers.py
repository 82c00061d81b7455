"""Issuers: identity providers whose tokens are accepted beside API keys.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "issuers",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("revision", sa.BigInteger, nullable=False, server_default=sa.text("1")),
    )


def downgrade() -> None:
    op.drop_table("issuers")
