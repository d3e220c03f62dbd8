"""messages (group_id, seq): group messages only, so a direct send adds no entry to it

Revision ID: 2f7c5a9e3d18
Revises: 9e4b2d7a1c35
Create Date: 2026-12-06 08:15:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "2f7c5a9e3d18"
down_revision: str | None = "9e4b2d7a1c35"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_GROUP_ONLY = sa.text("group_id IS NOT NULL")


def upgrade() -> None:
    op.drop_index(op.f("ix_messages_group_id_seq"), table_name="messages")
    op.create_index(
        op.f("ix_messages_group_id_seq"),
        "messages",
        ["group_id", "seq"],
        postgresql_where=_GROUP_ONLY,
        sqlite_where=_GROUP_ONLY,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_messages_group_id_seq"), table_name="messages")
    op.create_index(op.f("ix_messages_group_id_seq"), "messages", ["group_id", "seq"])
