"""The inference gateway: which protocols an upstream speaks, and whether it is only routed to.

A model's routes need no column: they are part of its metadata (`meta`), like its pricing.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("upstreams") as batch:
        batch.add_column(sa.Column("protocols", sa.JSON, nullable=True))
        batch.add_column(sa.Column("routing_only", sa.Boolean, nullable=False, server_default=sa.text("false")))


def downgrade() -> None:
    with op.batch_alter_table("upstreams") as batch:
        batch.drop_column("routing_only")
        batch.drop_column("protocols")
