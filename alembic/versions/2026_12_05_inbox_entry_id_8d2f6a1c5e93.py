"""inbox.entry_id: an id unique to each entry write, for GET /sync?since_id=

Revision ID: 8d2f6a1c5e93
Revises: 3f9c2b7e1d40
Create Date: 2026-12-05 23:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "8d2f6a1c5e93"
down_revision: str | None = "3f9c2b7e1d40"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The database draws the id of every row it inserts, so no statement writing entries
    # names the column. Existing rows get their own ids here: PostgreSQL evaluates a
    # volatile default once per row when it adds the column (it rewrites the table, under
    # an exclusive lock: on a large inbox, migrate during a quiet moment); SQLite cannot add
    # a column with an expression default, so the table is copied, each row taking one.
    if op.get_bind().dialect.name == "postgresql":
        op.add_column(
            "inbox",
            sa.Column(
                "entry_id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False
            ),
        )
    else:
        with op.batch_alter_table("inbox", recreate="always") as batch:
            batch.add_column(
                sa.Column(
                    "entry_id",
                    sa.Uuid(),
                    server_default=sa.text("(lower(hex(randomblob(16))))"),
                    nullable=False,
                )
            )


def downgrade() -> None:
    with op.batch_alter_table("inbox") as batch:
        batch.drop_column("entry_id")
