"""throttle_counters: login and registration attempt counters shared by every process

Revision ID: 160887d7f753
Revises: 5a1e7c0d9b21
Create Date: 2026-11-27 16:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "160887d7f753"
down_revision: str | None = "5a1e7c0d9b21"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "throttle_counters",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_throttle_counters")),
    )
    op.create_index(
        op.f("ix_throttle_counters_expires_at"), "throttle_counters", ["expires_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_throttle_counters_expires_at"), table_name="throttle_counters")
    op.drop_table("throttle_counters")
