"""group_members.last_message_id: a user's groups by newest message, from an index

Revision ID: 6c3a9e1f4b28
Revises: 4b7e1c9d2a60
Create Date: 2026-12-06 03:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "6c3a9e1f4b28"
down_revision: str | None = "4b7e1c9d2a60"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("group_members") as batch:
        batch.add_column(
            sa.Column("last_message_id", sa.BigInteger(), server_default="0", nullable=True)
        )
    # A small group's members hold its newest message (0 before the first); a large
    # group's hold none: the conversation list reads the group's row.
    op.execute(
        "UPDATE group_members SET last_message_id = ("
        "SELECT CASE WHEN groups.large THEN NULL ELSE coalesce(groups.last_message_id, 0) END"
        " FROM groups WHERE groups.group_id = group_members.group_id)"
    )
    op.create_index(
        op.f("ix_group_members_user_id_last_message_id"),
        "group_members",
        ["user_id", "last_message_id"],
    )
    op.drop_index(op.f("ix_group_members_user_id"), table_name="group_members")


def downgrade() -> None:
    op.create_index(op.f("ix_group_members_user_id"), "group_members", ["user_id"])
    op.drop_index(op.f("ix_group_members_user_id_last_message_id"), table_name="group_members")
    with op.batch_alter_table("group_members") as batch:
        batch.drop_column("last_message_id")
