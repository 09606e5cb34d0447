"""users.token_version: a password or email change revokes the tokens issued before it

Revision ID: 5c1d7e2a9f40
Revises: dab61306bfe7
Create Date: 2026-12-06 09:30:00

Safe while the app serves: since Postgres 11, adding a column with a constant default is a
catalog change (no table rewrite), taking the table's lock only for that instant. The lock
timeout keeps the ALTER from queueing behind a long transaction and stalling every query on
`users` meanwhile; a deploy that hits it fails and is retried instead.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "5c1d7e2a9f40"
down_revision: str | None = "dab61306bfe7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.add_column(
        "users",
        sa.Column("token_version", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("users", "token_version")
