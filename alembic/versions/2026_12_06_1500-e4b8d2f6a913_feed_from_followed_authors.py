"""feed from the followed authors: each author's newest article kept, read from one index

Revision ID: e4b8d2f6a913
Revises: c3a9e5f17d08
Create Date: 2026-12-06 15:00:00

The feed read every article of every followed author to keep 20: a reader following 1,000
authors read ~9,900 index entries at 1M articles (and all 100k of an author who wrote 100k).
`users.latest_article_id` (the id of the author's newest article, kept by the articles trigger
in the write's own transaction) bounds it: a feed page of `limit` after `offset` can only hold
articles of the `offset + limit` followed authors whose newest articles are newest, and at most
`offset + limit` of each (app/repositories/articles.py, `_feed_ids`). The feed already read
every followed author's `articles_count` for its total; the same look-up now brings the newest
id too, from `ix_users_feed` (`users (id) INCLUDE (articles_count, latest_article_id)`), an
index-only read where the page is all-visible.

Exact under concurrency: an insert sets GREATEST(latest, NEW.id); a delete of the newest
article takes the author's row lock first (its count's UPDATE), then looks for the newest
remaining article in a statement of its own, with a fresh snapshot, so a racing delete or
insert of the same author, serialised by that row lock, is seen.

Online like "maintained counts": the column is added without a default (catalog only), the
trigger function replaced in one statement (from its commit on, every write keeps the column),
then every batch of 1,000 users is locked and filled with a fresh snapshot, each batch its own
transaction, and the index built CONCURRENTLY. Every step can be run again.
"""

import time
from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "e4b8d2f6a913"
down_revision: str | None = "c3a9e5f17d08"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 1000
INDEX = "ix_users_feed"

COUNT_ARTICLE = """
CREATE OR REPLACE FUNCTION conduit_count_article() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  newest bigint;
BEGIN
  IF TG_OP = 'INSERT' THEN
    UPDATE users SET articles_count = articles_count + 1,
                     latest_article_id = GREATEST(latest_article_id, NEW.id)
      WHERE id = NEW.author_id;
    -- An upsert, not an UPDATE: a slot's row may be missing (a TRUNCATE of every table).
    INSERT INTO article_totals AS t (slot, articles) VALUES (NEW.id % 16, 1)
      ON CONFLICT (slot) DO UPDATE SET articles = t.articles + 1;
    INSERT INTO article_id_buckets AS b (bucket, articles) VALUES (NEW.id / 512, 1)
      ON CONFLICT (bucket) DO UPDATE SET articles = b.articles + 1;
  ELSE
    -- Takes the author's row lock: the look-up below, a statement of its own, then sees every
    -- write of this author that committed before it.
    UPDATE users SET articles_count = articles_count - 1 WHERE id = OLD.author_id
      RETURNING latest_article_id INTO newest;
    IF newest = OLD.id THEN
      UPDATE users SET latest_article_id =
          (SELECT max(id) FROM articles WHERE author_id = OLD.author_id)
        WHERE id = OLD.author_id;
    END IF;
    UPDATE article_totals SET articles = articles - 1 WHERE slot = OLD.id % 16;
    UPDATE article_id_buckets SET articles = articles - 1 WHERE bucket = OLD.id / 512;
  END IF;
  RETURN NULL;
END $$
"""

PREVIOUS_COUNT_ARTICLE = """
CREATE OR REPLACE FUNCTION conduit_count_article() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    UPDATE users SET articles_count = articles_count + 1 WHERE id = NEW.author_id;
    -- An upsert, not an UPDATE: a slot's row may be missing (a TRUNCATE of every table).
    INSERT INTO article_totals AS t (slot, articles) VALUES (NEW.id % 16, 1)
      ON CONFLICT (slot) DO UPDATE SET articles = t.articles + 1;
    INSERT INTO article_id_buckets AS b (bucket, articles) VALUES (NEW.id / 512, 1)
      ON CONFLICT (bucket) DO UPDATE SET articles = b.articles + 1;
  ELSE
    UPDATE users SET articles_count = articles_count - 1 WHERE id = OLD.author_id;
    UPDATE article_totals SET articles = articles - 1 WHERE slot = OLD.id % 16;
    UPDATE article_id_buckets SET articles = articles - 1 WHERE bucket = OLD.id / 512;
  END IF;
  RETURN NULL;
END $$
"""

# One batch of users: lock the rows, then look with a fresh snapshot (PL/pgSQL takes one per
# statement). A write in flight is waited for; one arriving meanwhile waits for the batch.
USERS_BATCH = """
DO $$
BEGIN
  PERFORM set_config('lock_timeout', '5s', true);
  PERFORM 1 FROM users WHERE id BETWEEN {lo} AND {hi} ORDER BY id FOR UPDATE;
  UPDATE users AS u SET latest_article_id = written.newest
  FROM users AS batch
  LEFT JOIN (
    SELECT author_id, max(id) AS newest FROM articles
    WHERE author_id BETWEEN {lo} AND {hi} GROUP BY author_id
  ) AS written ON written.author_id = batch.id
  WHERE u.id = batch.id AND batch.id BETWEEN {lo} AND {hi}
    AND u.latest_article_id IS DISTINCT FROM written.newest;
END $$
"""

DDL_LOCK_TIMEOUT = "1s"
ATTEMPTS = 10
RETRIED = {"55P03", "40P01"}  # lock_not_available, deadlock_detected


def _run(bind: sa.engine.Connection, statement: str, lock_timeout: str | None = None) -> None:
    """One statement in its own transaction, again after a lock timeout or a lost deadlock."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            if lock_timeout is not None:
                bind.execute(sa.text(f"SET lock_timeout = '{lock_timeout}'"))
            try:
                bind.execute(sa.text(statement))
            finally:
                if lock_timeout is not None:
                    bind.execute(sa.text("RESET lock_timeout"))
            return
        except sa.exc.DBAPIError as error:
            code = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
            if code not in RETRIED or attempt == ATTEMPTS:
                raise
            time.sleep(0.5 * attempt)


def _invalid_index(bind: sa.engine.Connection, name: str) -> bool:
    query = sa.text(
        "SELECT NOT indisvalid FROM pg_index JOIN pg_class ON pg_class.oid = indexrelid "
        "WHERE relname = :name"
    )
    return bool(bind.execute(query, {"name": name}).scalar())


def upgrade() -> None:
    with op.get_context().autocommit_block():
        bind = op.get_bind()
        _run(
            bind,
            "ALTER TABLE users ADD COLUMN IF NOT EXISTS latest_article_id bigint",
            lock_timeout=DDL_LOCK_TIMEOUT,
        )
        op.execute(COUNT_ARTICLE)  # from its commit on, every write keeps the column
        bounds = bind.execute(sa.text("SELECT min(id), max(id) FROM users")).one()
        if bounds[0] is not None:
            for lo in range(int(bounds[0]), int(bounds[1]) + 1, BATCH):
                _run(bind, USERS_BATCH.format(lo=lo, hi=lo + BATCH - 1))
        # A concurrent build that failed leaves an invalid index behind: it is built again.
        if _invalid_index(bind, INDEX):
            op.execute(f"DROP INDEX CONCURRENTLY {INDEX}")
        op.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} "
            "ON users (id) INCLUDE (articles_count, latest_article_id)"
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
    op.execute(PREVIOUS_COUNT_ARTICLE)
    op.drop_column("users", "latest_article_id")
