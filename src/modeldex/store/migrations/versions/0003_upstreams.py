"""Discovery: upstreams, their health and poll leases; the source and staleness of discovered models.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("source", sa.String(64), nullable=True))
        batch.add_column(sa.Column("stale_since", sa.Float, nullable=True))
    op.create_index("ix_models_source", "models", ["source"])
    op.create_table(
        "upstreams",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("base_url", sa.Text, nullable=False),
        sa.Column("api_key_env", sa.String(128), nullable=True),
        sa.Column("prefix", sa.String(64), nullable=True),
        sa.Column("include", sa.JSON, nullable=False),
        sa.Column("exclude", sa.JSON, nullable=False),
        sa.Column("interval", sa.Integer, nullable=False),
        sa.Column("grace", sa.Integer, nullable=False),
        sa.Column("timeout", sa.Integer, nullable=False),
        sa.Column("owned_by", sa.String(128), nullable=True),
        sa.Column("revision", sa.BigInteger, nullable=False, server_default=sa.text("1")),
    )
    op.create_table(
        "upstream_health",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("last_attempt_at", sa.Float, nullable=True),
        sa.Column("last_success_at", sa.Float, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("last_error_at", sa.Float, nullable=True),
        sa.Column("latency_ms", sa.Float, nullable=True),
        sa.Column("model_count", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("failing_since", sa.Float, nullable=True),
        sa.Column("shadowed", sa.JSON, nullable=True),
        sa.Column("next_poll_at", sa.Float, nullable=True),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_until", sa.Float, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("upstream_health")
    op.drop_table("upstreams")
    op.drop_index("ix_models_source", table_name="models")
    with op.batch_alter_table("models") as batch:
        batch.drop_column("stale_since")
        batch.drop_column("source")
