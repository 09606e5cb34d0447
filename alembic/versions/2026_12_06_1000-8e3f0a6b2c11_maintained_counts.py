"""maintained counts: list totals and popular tags read a few rows instead of counting

Revision ID: 8e3f0a6b2c11
Revises: 5c1d7e2a9f40
Create Date: 2026-12-06 10:00:00

`articlesCount` is the total of a list, and counting it with `count(*) OVER ()` read every
matching row on every request: on a million articles, the home page read a million rows. The
totals are now kept up to date by triggers, in the transaction of the write itself, so they are
exact (a rolled-back write never counted) and cover every path, ON DELETE CASCADE included:
- `users.articles_count` (by author) and `users.favorites_count` (by favouriting user);
- `tags.articles_count` (by tag, and the popular-tags ranking, by index);
- `article_totals`: the global count, in 16 slots (`id % 16`), so concurrent writers seldom
  wait for one another's row.

Online, in three phases (docs/performance.md, "Scale"):
1. Expand, in the migration's transaction, each step under a 5 s lock timeout: columns with a
   constant default (catalog only, no rewrite), the slots table, the trigger functions and the
   triggers. Creating a trigger waits for the writes in flight and holds writes back only for
   that instant; from its commit on, every write keeps the counts.
2. Backfill, in batches of 1,000 users or tags, each batch its own transaction: lock the
   batch's rows, then count with a fresh snapshot (one DO block: PL/pgSQL takes a snapshot per
   statement). A write in flight is waited for and counted; a write arriving meanwhile waits
   for the batch (milliseconds) and then adds to the exact count. The global count locks the 16
   slots for one count of `articles` (an index-only scan: about 0.1 s per million).
3. `CREATE INDEX CONCURRENTLY` for the popular tags, outside any transaction.

Every step can be run again: a failed run is resumed by running the migration again.
"""

import time
from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "8e3f0a6b2c11"
down_revision: str | None = "5c1d7e2a9f40"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# app.models.article.ARTICLE_TOTAL_SLOTS, as it was when this revision was written: the SQL
# below says 16 where it means it.
SLOTS = 16
BATCH = 1000
BOUNDS = {
    "users": "SELECT min(id), max(id) FROM users",
    "tags": "SELECT min(id), max(id) FROM tags",
}

# One statement each: asyncpg sends a statement at a time.
COUNT_FUNCTIONS = [
    """
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
""",
    """
CREATE OR REPLACE FUNCTION conduit_count_article_tag() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    UPDATE tags SET articles_count = articles_count + 1 WHERE id = NEW.tag_id;
  ELSE
    UPDATE tags SET articles_count = articles_count - 1 WHERE id = OLD.tag_id;
  END IF;
  RETURN NULL;
END $$
""",
    """
CREATE OR REPLACE FUNCTION conduit_count_favorite() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    UPDATE users SET favorites_count = favorites_count + 1 WHERE id = NEW.user_id;
  ELSE
    UPDATE users SET favorites_count = favorites_count - 1 WHERE id = OLD.user_id;
  END IF;
  RETURN NULL;
END $$
""",
]

TRIGGERS = {
    "articles": ("articles_counted", "conduit_count_article"),
    "article_tags": ("article_tags_counted", "conduit_count_article_tag"),
    "favorites": ("favorites_counted", "conduit_count_favorite"),
}

# One batch of users: lock the rows, then count with a fresh snapshot (see the docstring).
USERS_BATCH = """
DO $$
BEGIN
  PERFORM set_config('lock_timeout', '5s', true);
  PERFORM 1 FROM users WHERE id BETWEEN {lo} AND {hi} ORDER BY id FOR UPDATE;
  UPDATE users AS u
  SET articles_count = coalesce(written.n, 0), favorites_count = coalesce(liked.n, 0)
  FROM users AS batch
  LEFT JOIN (
    SELECT author_id, count(*) AS n FROM articles
    WHERE author_id BETWEEN {lo} AND {hi} GROUP BY author_id
  ) AS written ON written.author_id = batch.id
  LEFT JOIN (
    SELECT user_id, count(*) AS n FROM favorites
    WHERE user_id BETWEEN {lo} AND {hi} GROUP BY user_id
  ) AS liked ON liked.user_id = batch.id
  WHERE u.id = batch.id AND batch.id BETWEEN {lo} AND {hi};
END $$
"""

TAGS_BATCH = """
DO $$
BEGIN
  PERFORM set_config('lock_timeout', '5s', true);
  PERFORM 1 FROM tags WHERE id BETWEEN {lo} AND {hi} ORDER BY id FOR UPDATE;
  UPDATE tags AS t SET articles_count = coalesce(used.n, 0)
  FROM tags AS batch
  LEFT JOIN (
    SELECT tag_id, count(*) AS n FROM article_tags
    WHERE tag_id BETWEEN {lo} AND {hi} GROUP BY tag_id
  ) AS used ON used.tag_id = batch.id
  WHERE t.id = batch.id AND batch.id BETWEEN {lo} AND {hi};
END $$
"""

TOTALS = """
DO $$
BEGIN
  PERFORM set_config('lock_timeout', '5s', true);
  PERFORM 1 FROM article_totals ORDER BY slot FOR UPDATE;
  UPDATE article_totals AS t SET articles = coalesce(counted.n, 0)
  FROM article_totals AS s
  LEFT JOIN (
    SELECT id % 16 AS slot, count(*) AS n FROM articles GROUP BY 1
  ) AS counted ON counted.slot = s.slot
  WHERE t.slot = s.slot;
END $$
"""


def upgrade() -> None:
    # Every statement its own transaction: a lock taken by DDL is held until its transaction
    # ends, and ALTER TABLE users holds one that stops every read of `users`.
    with op.get_context().autocommit_block():
        bind = op.get_bind()
        # Phase 1, expand.
        for table, column in (
            ("users", "articles_count"),
            ("users", "favorites_count"),
            ("tags", "articles_count"),
        ):
            _ddl(
                bind,
                f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} integer NOT NULL DEFAULT 0",
            )
        _ddl(
            bind,
            "CREATE TABLE IF NOT EXISTS article_totals ("
            " slot smallint NOT NULL, articles bigint NOT NULL DEFAULT 0,"
            " CONSTRAINT pk_article_totals PRIMARY KEY (slot))",
        )
        op.execute(
            f"INSERT INTO article_totals (slot) SELECT generate_series(0, {SLOTS - 1}) "
            "ON CONFLICT DO NOTHING"
        )
        for function in COUNT_FUNCTIONS:
            op.execute(function)
        for table, (trigger, function) in TRIGGERS.items():
            # One statement: between a DROP and a CREATE, writes would go uncounted.
            _ddl(
                bind,
                f"CREATE OR REPLACE TRIGGER {trigger} AFTER INSERT OR DELETE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION {function}()",
            )

        # Phase 2, backfill in batches.
        for table, batch in (("users", USERS_BATCH), ("tags", TAGS_BATCH)):
            bounds = bind.execute(sa.text(BOUNDS[table])).one()
            if bounds[0] is None:
                continue
            for lo in range(int(bounds[0]), int(bounds[1]) + 1, BATCH):
                _retry_on_conflict(bind, batch.format(lo=lo, hi=lo + BATCH - 1))
        _retry_on_conflict(bind, TOTALS)

        # Phase 3: the index, built without blocking writes. A concurrent build that failed
        # leaves an invalid index behind: it is built again.
        if _invalid_index(bind, "ix_tags_articles_count_name"):
            op.execute("DROP INDEX CONCURRENTLY ix_tags_articles_count_name")
        op.execute(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_tags_articles_count_name "
            "ON tags (articles_count DESC, name)"
        )


# A DDL statement waits at most this long for its lock (and the queries queued behind it wait
# no longer), then tries again, a few times, before the migration gives up (to be run again).
DDL_LOCK_TIMEOUT = "1s"
LOCK_ATTEMPTS = 10
# A batch can also lose a deadlock to a write that locks the same users in another order (an
# article's deletion decrements each of its fans): it is run again, as the write would be.
RETRIED = {"55P03", "40P01"}  # lock_not_available, deadlock_detected


def _ddl(bind: sa.engine.Connection, statement: str) -> None:
    _retry_on_conflict(bind, statement, lock_timeout=DDL_LOCK_TIMEOUT)


def _retry_on_conflict(
    bind: sa.engine.Connection, statement: str, *, lock_timeout: str | None = None
) -> None:
    for attempt in range(1, LOCK_ATTEMPTS + 1):
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
            if code not in RETRIED or attempt == LOCK_ATTEMPTS:
                raise
            time.sleep(0.5 * attempt)


def _invalid_index(bind: sa.engine.Connection, name: str) -> bool:
    query = sa.text(
        "SELECT NOT indisvalid FROM pg_index JOIN pg_class ON pg_class.oid = indexrelid "
        "WHERE relname = :name"
    )
    return bool(bind.execute(query, {"name": name}).scalar())


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_tags_articles_count_name")
    for table, (trigger, _) in TRIGGERS.items():
        op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
    for _, function in TRIGGERS.values():
        op.execute(f"DROP FUNCTION IF EXISTS {function}()")
    op.drop_table("article_totals")
    op.drop_column("tags", "articles_count")
    op.drop_column("users", "favorites_count")
    op.drop_column("users", "articles_count")
