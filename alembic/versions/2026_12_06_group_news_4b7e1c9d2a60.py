"""group_members.news_seq: coalesced group_news for large groups

Revision ID: 4b7e1c9d2a60
Revises: 8d2f6a1c5e93
Create Date: 2026-12-06 03:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "4b7e1c9d2a60"
down_revision: str | None = "8d2f6a1c5e93"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL for every existing member: no group was large before, none holds news.
    with op.batch_alter_table("group_members") as batch:
        batch.add_column(sa.Column("news_seq", sa.BigInteger(), nullable=True))
    op.create_index(
        "ix_group_members_news_pending",
        "group_members",
        ["group_id", "user_id"],
        postgresql_where=sa.text("news_seq IS NULL"),
        sqlite_where=sa.text("news_seq IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_group_members_news_pending", table_name="group_members")
    with op.batch_alter_table("group_members") as batch:
        batch.drop_column("news_seq")
