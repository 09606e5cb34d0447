"""article id buckets: a deep page of the global list seeks instead of skipping

Revision ID: c3a9e5f17d08
Revises: b7d41c9e0a52
Create Date: 2026-12-06 11:00:00

`?offset=10000` used to read and throw away 10,000 index entries: O(offset). Articles are
counted per bucket of 512 consecutive ids (`article_id_buckets`, kept by the articles trigger
in the write's own transaction), so `conduit_article_anchor(offset)` walks the buckets from the
newest, adding their counts, to the one that holds the page's first article, and answers its
upper id bound and how many of its articles to skip (fewer than 512). The page then reads
`id < bound ORDER BY id DESC OFFSET rest`: about offset / 512 bucket rows and under 512 index
entries, in the statement's one snapshot, so exact.

Online like "maintained counts": the function replaced in one statement (every write from then
on keeps the buckets), then the buckets counted in batches of 256 buckets, each locked before
it is counted with a fresh snapshot, each its own transaction.
"""

import time
from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "c3a9e5f17d08"
down_revision: str | None = "b7d41c9e0a52"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BUCKET_IDS = 512  # app.repositories.articles.BUCKET_IDS; the SQL below says 512
BATCH_BUCKETS = 256

COUNT_ARTICLE = """
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

PREVIOUS_COUNT_ARTICLE = """
CREATE OR REPLACE FUNCTION conduit_count_article() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    UPDATE users SET articles_count = articles_count + 1 WHERE id = NEW.author_id;
    -- An upsert, not an UPDATE: a slot's row may be missing (a TRUNCATE of every table).
    INSERT INTO article_totals AS t (slot, articles) VALUES (NEW.id % 16, 1)
      ON CONFLICT (slot) DO UPDATE SET articles = t.articles + 1;
  ELSE
    UPDATE users SET articles_count = articles_count - 1 WHERE id = OLD.author_id;
    UPDATE article_totals SET articles = articles - 1 WHERE slot = OLD.id % 16;
  END IF;
  RETURN NULL;
END $$
"""

ANCHOR = """
CREATE OR REPLACE FUNCTION conduit_article_anchor(skip bigint, OUT upper bigint, OUT rest bigint)
LANGUAGE plpgsql STABLE AS $$
DECLARE
  seen bigint := 0;
  b record;
BEGIN
  FOR b IN SELECT bucket, articles FROM article_id_buckets
           WHERE articles > 0 ORDER BY bucket DESC LOOP
    IF seen + b.articles > skip THEN
      upper := (b.bucket + 1) * 512;
      rest := skip - seen;
      RETURN;
    END IF;
    seen := seen + b.articles;
  END LOOP;
  upper := 0;  -- past the end: no article has an id below 0
  rest := 0;
END $$
"""

BATCH = """
DO $$
BEGIN
  PERFORM set_config('lock_timeout', '5s', true);
  INSERT INTO article_id_buckets (bucket, articles)
    SELECT g, 0 FROM generate_series({lo}, {hi}) g ON CONFLICT DO NOTHING;
  PERFORM 1 FROM article_id_buckets WHERE bucket BETWEEN {lo} AND {hi} ORDER BY bucket FOR UPDATE;
  UPDATE article_id_buckets AS b SET articles = coalesce(counted.n, 0)
  FROM article_id_buckets AS batch
  LEFT JOIN (
    SELECT id / 512 AS bucket, count(*) AS n FROM articles
    WHERE id >= {lo} * 512 AND id < ({hi} + 1) * 512 GROUP BY 1
  ) AS counted ON counted.bucket = batch.bucket
  WHERE b.bucket = batch.bucket AND batch.bucket BETWEEN {lo} AND {hi};
END $$
"""

RETRIED = {"55P03", "40P01"}  # lock_not_available, deadlock_detected
ATTEMPTS = 10


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


def upgrade() -> None:
    with op.get_context().autocommit_block():
        bind = op.get_bind()
        _run(
            bind,
            "CREATE TABLE IF NOT EXISTS article_id_buckets ("
            " bucket bigint NOT NULL, articles integer NOT NULL DEFAULT 0,"
            " CONSTRAINT pk_article_id_buckets PRIMARY KEY (bucket))",
            lock_timeout="1s",
        )
        op.execute(ANCHOR)
        op.execute(COUNT_ARTICLE)  # from its commit on, every write keeps the buckets
        top = bind.execute(sa.text("SELECT max(id) FROM articles")).scalar()
        if top is None:
            return
        for lo in range(0, int(top) // BUCKET_IDS + 1, BATCH_BUCKETS):
            _run(bind, BATCH.format(lo=lo, hi=lo + BATCH_BUCKETS - 1))


def downgrade() -> None:
    op.execute(PREVIOUS_COUNT_ARTICLE)
    op.execute("DROP FUNCTION IF EXISTS conduit_article_anchor(bigint)")
    op.drop_table("article_id_buckets")
