"""throttle_counters.retry_at: growing delays instead of a fixed window

Revision ID: 3f9c2b7e1d40
Revises: 7b3e9d2a4c18
Create Date: 2026-12-05 20:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "3f9c2b7e1d40"
down_revision: str | None = "7b3e9d2a4c18"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Counters kept from the fixed windows start with no delay: at worst a guesser gets its
    # free attempts again once, at the upgrade.
    op.add_column(
        "throttle_counters",
        sa.Column("retry_at", sa.Double(), server_default="0", nullable=False),
    )


def downgrade() -> None:
    with op.batch_alter_table("throttle_counters") as batch:
        batch.drop_column("retry_at")
