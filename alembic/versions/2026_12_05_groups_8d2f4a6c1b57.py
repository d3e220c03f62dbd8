"""groups: groups, their members and their log; group messages in messages

Revision ID: 8d2f4a6c1b57
Revises: 3f9c2b7e1d40
Create Date: 2026-12-05 23:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "8d2f4a6c1b57"
down_revision: str | None = "3f9c2b7e1d40"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "groups",
        sa.Column("group_id", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("creator", sa.String(length=64), nullable=False),
        sa.Column("client_group_id", sa.String(length=128), nullable=True),
        sa.Column("latest_seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("member_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("large", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("last_message_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("group_id", name=op.f("pk_groups")),
        sa.UniqueConstraint(
            "creator", "client_group_id", name=op.f("uq_groups_creator_client_group_id")
        ),
    )
    op.create_table(
        "group_members",
        sa.Column("group_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("joined_seq", sa.BigInteger(), nullable=False),
        sa.Column("read_seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["groups.group_id"],
            name=op.f("fk_group_members_group_id_groups"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.user_id"],
            name=op.f("fk_group_members_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("group_id", "user_id", name=op.f("pk_group_members")),
    )
    op.create_index(op.f("ix_group_members_user_id"), "group_members", ["user_id"])
    op.create_table(
        "group_events",
        sa.Column("group_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("data", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["groups.group_id"],
            name=op.f("fk_group_events_group_id_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("group_id", "seq", name=op.f("pk_group_events")),
    )
    # Group messages live in messages (one id sequence): no recipient, no pair.
    with op.batch_alter_table("messages") as batch:
        batch.alter_column("recipient", existing_type=sa.String(length=64), nullable=True)
        batch.alter_column("pair_lo", existing_type=sa.String(length=64), nullable=True)
        batch.alter_column("pair_hi", existing_type=sa.String(length=64), nullable=True)
        batch.alter_column("recipient_version", existing_type=sa.BigInteger(), nullable=True)
        batch.add_column(sa.Column("group_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch.create_index(batch.f("ix_messages_group_id_seq"), ["group_id", "seq"])


def downgrade() -> None:
    # Group messages cannot be kept in a schema without groups.
    op.execute("DELETE FROM messages WHERE group_id IS NOT NULL")
    with op.batch_alter_table("messages") as batch:
        batch.drop_index(batch.f("ix_messages_group_id_seq"))
        batch.drop_column("seq")
        batch.drop_column("group_id")
        batch.alter_column("recipient_version", existing_type=sa.BigInteger(), nullable=False)
        batch.alter_column("pair_hi", existing_type=sa.String(length=64), nullable=False)
        batch.alter_column("pair_lo", existing_type=sa.String(length=64), nullable=False)
        batch.alter_column("recipient", existing_type=sa.String(length=64), nullable=False)
    op.drop_table("group_events")
    op.drop_index(op.f("ix_group_members_user_id"), table_name="group_members")
    op.drop_table("group_members")
    op.drop_table("groups")
