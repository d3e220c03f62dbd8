"""pushers: the send marks a recipient's pushers due; an index on the due time

The push worker leased due pushers by joining every pusher to its user and device each
round, a scan of all pushers (48 ms at 10,000 on the shared test machine, every round of
every process). A send now sets its recipient's pushers' due time (or, during a push in
flight, `news`), so the lease reads the due ones from an index.

Revision ID: 7b3e9d2a4c18
Revises: 160887d7f753
Create Date: 2026-11-27 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "7b3e9d2a4c18"
down_revision: str | None = "160887d7f753"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "pushers",
        sa.Column("news", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.create_index(
        op.f("ix_pushers_due_at"),
        "pushers",
        ["due_at"],
        unique=False,
        postgresql_where=sa.text("due_at IS NOT NULL"),
        sqlite_where=sa.text("due_at IS NOT NULL"),
    )
    # Pushers that may have messages sent before this version: examined once, at once.
    op.execute(sa.text("UPDATE pushers SET due_at = CURRENT_TIMESTAMP WHERE due_at IS NULL"))


def downgrade() -> None:
    op.drop_index(op.f("ix_pushers_due_at"), table_name="pushers")
    op.drop_column("pushers", "news")
