"""pushers: push gateway registrations per device, with their push cursor

Revision ID: 5a1e7c0d9b21
Revises: c4407be67f7c
Create Date: 2026-11-27 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "5a1e7c0d9b21"
down_revision: str | None = "c4407be67f7c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pushers",
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("pushkey", sa.String(length=512), nullable=False),
        sa.Column("device_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("gateway_url", sa.Text(), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("pushed_version", sa.BigInteger(), nullable=False),
        sa.Column("synced_version", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("leased_until", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.device_id"],
            name=op.f("fk_pushers_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("app_id", "pushkey", name=op.f("pk_pushers")),
    )
    op.create_index(op.f("ix_pushers_device_id"), "pushers", ["device_id"], unique=False)
    op.create_index(op.f("ix_pushers_user_id"), "pushers", ["user_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_pushers_user_id"), table_name="pushers")
    op.drop_index(op.f("ix_pushers_device_id"), table_name="pushers")
    op.drop_table("pushers")
