"""A fingerprint of the credential each upstream's last poll sent, so that a server started with a new one
polls at once (discovery/credentials.py). Never the credential itself.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("upstream_health") as batch:
        batch.add_column(sa.Column("credential", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("upstream_health") as batch:
        batch.drop_column("credential")
