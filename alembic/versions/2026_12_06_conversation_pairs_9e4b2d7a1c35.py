"""conversations: one row per pair of users instead of one per user, so a send writes one

Revision ID: 9e4b2d7a1c35
Revises: 6c3a9e1f4b28
Create Date: 2026-12-06 08:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "9e4b2d7a1c35"
down_revision: str | None = "6c3a9e1f4b28"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _binary() -> str:
    # The pair is sorted in code point order, as the application sorts it for
    # messages.pair_lo/pair_hi: PostgreSQL's default collation may order otherwise, SQLite's
    # default (BINARY) already does.
    return ' COLLATE "C"' if op.get_bind().dialect.name == "postgresql" else ""


def upgrade() -> None:
    c = _binary()
    # The rows are copied aside, the table rebuilt with its final names (PostgreSQL's
    # constraint and index names are per schema, so the old table cannot stay beside it).
    op.execute(
        "CREATE TABLE conversation_pairs_copy AS"
        " SELECT lo AS pair_lo, hi AS pair_hi, max(last_message_id) AS last_message_id,"
        " coalesce(max(CASE WHEN user_id = lo THEN read_up_to_id END), 0) AS read_lo,"
        " coalesce(max(CASE WHEN user_id = hi THEN read_up_to_id END), 0) AS read_hi"
        " FROM (SELECT user_id, last_message_id, read_up_to_id,"
        f" CASE WHEN user_id{c} <= peer{c} THEN user_id ELSE peer END AS lo,"
        f" CASE WHEN user_id{c} <= peer{c} THEN peer ELSE user_id END AS hi"
        " FROM conversations) AS sides"
        " GROUP BY lo, hi"
    )
    op.drop_index(op.f("ix_conversations_user_id_last_message_id"), table_name="conversations")
    op.drop_table("conversations")
    op.create_table(
        "conversations",
        sa.Column("pair_lo", sa.String(length=64), nullable=False),
        sa.Column("pair_hi", sa.String(length=64), nullable=False),
        sa.Column("last_message_id", sa.BigInteger(), nullable=False),
        sa.Column("read_lo", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("read_hi", sa.BigInteger(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["pair_hi"],
            ["users.user_id"],
            name=op.f("fk_conversations_pair_hi_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["pair_lo"],
            ["users.user_id"],
            name=op.f("fk_conversations_pair_lo_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pair_lo", "pair_hi", name=op.f("pk_conversations")),
    )
    op.execute(
        "INSERT INTO conversations (pair_lo, pair_hi, last_message_id, read_lo, read_hi)"
        " SELECT pair_lo, pair_hi, last_message_id, read_lo, read_hi"
        " FROM conversation_pairs_copy"
    )
    op.drop_table("conversation_pairs_copy")
    op.create_index(
        op.f("ix_conversations_pair_lo_last_message_id"),
        "conversations",
        ["pair_lo", "last_message_id"],
    )
    op.create_index(
        op.f("ix_conversations_pair_hi_last_message_id"),
        "conversations",
        ["pair_hi", "last_message_id"],
    )


def downgrade() -> None:
    # Each pair becomes a row per party again (one for a note to oneself).
    op.execute(
        "CREATE TABLE conversations_by_user_copy AS"
        " SELECT pair_lo AS user_id, pair_hi AS peer, last_message_id,"
        " read_lo AS read_up_to_id FROM conversations"
        " UNION ALL"
        " SELECT pair_hi, pair_lo, last_message_id, read_hi FROM conversations"
        " WHERE pair_lo <> pair_hi"
    )
    op.drop_index(op.f("ix_conversations_pair_hi_last_message_id"), table_name="conversations")
    op.drop_index(op.f("ix_conversations_pair_lo_last_message_id"), table_name="conversations")
    op.drop_table("conversations")
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
    op.execute(
        "INSERT INTO conversations (user_id, peer, last_message_id, read_up_to_id)"
        " SELECT user_id, peer, last_message_id, read_up_to_id FROM conversations_by_user_copy"
    )
    op.drop_table("conversations_by_user_copy")
    op.create_index(
        op.f("ix_conversations_user_id_last_message_id"),
        "conversations",
        ["user_id", "last_message_id"],
        unique=False,
    )
