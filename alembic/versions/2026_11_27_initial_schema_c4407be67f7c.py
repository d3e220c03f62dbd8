"""initial_schema

Revision ID: c4407be67f7c
Revises:
Create Date: 2026-11-27 10:00:58.854586
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "c4407be67f7c"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "users",
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("latest_version", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("floor_version", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_users")),
    )
    op.create_table(
        "conversations",
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("peer", sa.String(length=64), nullable=False),
        sa.Column("last_message_id", sa.BigInteger(), nullable=False),
        sa.Column("read_up_to_id", sa.BigInteger(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["peer"],
            ["users.user_id"],
            name=op.f("fk_conversations_peer_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.user_id"],
            name=op.f("fk_conversations_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "peer", name=op.f("pk_conversations")),
    )
    op.create_index(
        op.f("ix_conversations_user_id_last_message_id"),
        "conversations",
        ["user_id", "last_message_id"],
        unique=False,
    )
    op.create_table(
        "devices",
        sa.Column("device_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("acked_version", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.user_id"],
            name=op.f("fk_devices_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_devices")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_devices_token_hash")),
    )
    op.create_index(op.f("ix_devices_user_id"), "devices", ["user_id"], unique=False)
    op.create_table(
        "inbox",
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("data", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.user_id"], name=op.f("fk_inbox_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "version", name=op.f("pk_inbox")),
    )
    op.create_index(op.f("ix_inbox_created_at"), "inbox", ["created_at"], unique=False)
    op.create_table(
        "messages",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("sender", sa.String(length=64), nullable=False),
        sa.Column("recipient", sa.String(length=64), nullable=False),
        sa.Column("pair_lo", sa.String(length=64), nullable=False),
        sa.Column("pair_hi", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("client_msg_id", sa.String(length=128), nullable=True),
        sa.Column("sender_version", sa.BigInteger(), nullable=False),
        sa.Column("recipient_version", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recalled_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["recipient"],
            ["users.user_id"],
            name=op.f("fk_messages_recipient_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sender"], ["users.user_id"], name=op.f("fk_messages_sender_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint(
            "sender", "client_msg_id", name=op.f("uq_messages_sender_client_msg_id")
        ),
    )
    op.create_index(
        op.f("ix_messages_pair_lo_pair_hi_id"),
        "messages",
        ["pair_lo", "pair_hi", "id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_messages_recipient_recipient_version"),
        "messages",
        ["recipient", "recipient_version"],
        unique=False,
    )
    op.create_index(
        op.f("ix_messages_sender_sender_version"),
        "messages",
        ["sender", "sender_version"],
        unique=False,
    )


def downgrade() -> None:

    op.drop_index(op.f("ix_messages_sender_sender_version"), table_name="messages")
    op.drop_index(op.f("ix_messages_recipient_recipient_version"), table_name="messages")
    op.drop_index(op.f("ix_messages_pair_lo_pair_hi_id"), table_name="messages")
    op.drop_table("messages")
    op.drop_index(op.f("ix_inbox_created_at"), table_name="inbox")
    op.drop_table("inbox")
    op.drop_index(op.f("ix_devices_user_id"), table_name="devices")
    op.drop_table("devices")
    op.drop_index(op.f("ix_conversations_user_id_last_message_id"), table_name="conversations")
    op.drop_table("conversations")
    op.drop_table("users")
