"""newest-first indexes: each list reads one index backwards and stops after its page

Revision ID: b7d41c9e0a52
Revises: 8e3f0a6b2c11
Create Date: 2026-12-06 10:30:00

Lists are ordered newest first by id (the order of the sequence, which is the order articles
were written). Two indexes make every single-filter list a backward range scan that stops
after the page, instead of collecting all matches and sorting them:
- `articles (author_id, id DESC)`: an author's articles;
- `article_tags (tag_id, article_id DESC)`: a tag's articles (a popular tag has hundreds of
  thousands; a rare one, a handful: the same few index pages either way).
The global list reads the primary key backwards, a user's favourites the favourites' primary
key `(user_id, article_id)` backwards.

Expand only: both are built CONCURRENTLY (no lock that stops writes), outside a transaction,
and a failed build is dropped and built again when the migration runs again. The indexes the
previous release's queries use (`ix_articles_created_at_id`, `ix_articles_author_id_created_at`,
`ix_article_tags_tag_id`) stay until the next release's contract migration: during a rollout
the previous release still serves.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "b7d41c9e0a52"
down_revision: str | None = "8e3f0a6b2c11"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_articles_author_id_id": "articles (author_id, id DESC)",
    "ix_article_tags_tag_id_article_id": "article_tags (tag_id, article_id DESC)",
}


def _invalid(bind: sa.engine.Connection, name: str) -> bool:
    query = sa.text(
        "SELECT NOT indisvalid FROM pg_index JOIN pg_class ON pg_class.oid = indexrelid "
        "WHERE relname = :name"
    )
    return bool(bind.execute(query, {"name": name}).scalar())


def upgrade() -> None:
    with op.get_context().autocommit_block():
        bind = op.get_bind()
        for name, definition in INDEXES.items():
            if _invalid(bind, name):
                op.execute(f"DROP INDEX CONCURRENTLY {name}")
            op.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {definition}")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name in INDEXES:
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
