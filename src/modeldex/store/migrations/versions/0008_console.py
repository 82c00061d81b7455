"""The web console: its sessions, and each upstream's recent poll latencies (its health chart).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("credential", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("rate_limit", sa.String(32), nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False, index=True),
    )
    with op.batch_alter_table("upstream_health") as batch:
        batch.add_column(sa.Column("latency_history", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("upstream_health") as batch:
        batch.drop_column("latency_history")
    op.drop_table("console_sessions")
