"""Check (and repair) the maintained counts against a count of the rows themselves.

The triggers of the "maintained counts" migration keep them exact; this is for operators and
tests: after a restore from a logical dump taken with triggers disabled, after a bulk load that
bypassed them, or to prove they are exact. `python -m app.db.recount` logs the mismatches
(exit 1 when there are any); `--fix` sets them right, with writes held back meanwhile (a
maintenance step).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import asyncpg

from app.core.config import get_settings
from app.core.logging_config import configure_logging, get_logger

log = get_logger(__name__)

# Each query answers (what, id, maintained, counted) for every row whose count is wrong.
MISMATCHES = {
    "users.articles_count": """
        SELECT 'users.articles_count', u.id, u.articles_count, count(a.id)
        FROM users u LEFT JOIN articles a ON a.author_id = u.id
        GROUP BY u.id HAVING u.articles_count <> count(a.id)""",
    "users.favorites_count": """
        SELECT 'users.favorites_count', u.id, u.favorites_count, count(f.article_id)
        FROM users u LEFT JOIN favorites f ON f.user_id = u.id
        GROUP BY u.id HAVING u.favorites_count <> count(f.article_id)""",
    # Not a count, but kept the same way: the author's newest article (0 here for none).
    "users.latest_article_id": """
        SELECT 'users.latest_article_id', u.id, coalesce(u.latest_article_id, 0),
               coalesce(max(a.id), 0)
        FROM users u LEFT JOIN articles a ON a.author_id = u.id
        GROUP BY u.id HAVING u.latest_article_id IS DISTINCT FROM max(a.id)""",
    "tags.articles_count": """
        SELECT 'tags.articles_count', t.id, t.articles_count, count(at.article_id)
        FROM tags t LEFT JOIN article_tags at ON at.tag_id = t.id
        GROUP BY t.id HAVING t.articles_count <> count(at.article_id)""",
    "article_totals": """
        SELECT 'article_totals', s.slot, s.articles, coalesce(c.n, 0)
        FROM article_totals s
        LEFT JOIN (SELECT id % 16 AS slot, count(*) AS n FROM articles GROUP BY 1) c
          ON c.slot = s.slot
        WHERE s.articles <> coalesce(c.n, 0)""",
    "articles.favorites_count": """
        SELECT 'articles.favorites_count', a.id, a.favorites_count, count(f.user_id)
        FROM articles a LEFT JOIN favorites f ON f.article_id = a.id
        GROUP BY a.id HAVING a.favorites_count <> count(f.user_id)""",
}

FIXES = {
    "users.articles_count": """
        UPDATE users u SET articles_count = c.n
        FROM (SELECT u2.id, count(a.id) AS n FROM users u2
              LEFT JOIN articles a ON a.author_id = u2.id GROUP BY u2.id) c
        WHERE u.id = c.id AND u.articles_count <> c.n""",
    "users.favorites_count": """
        UPDATE users u SET favorites_count = c.n
        FROM (SELECT u2.id, count(f.article_id) AS n FROM users u2
              LEFT JOIN favorites f ON f.user_id = u2.id GROUP BY u2.id) c
        WHERE u.id = c.id AND u.favorites_count <> c.n""",
    "users.latest_article_id": """
        UPDATE users u SET latest_article_id = c.newest
        FROM (SELECT u2.id, max(a.id) AS newest FROM users u2
              LEFT JOIN articles a ON a.author_id = u2.id GROUP BY u2.id) c
        WHERE u.id = c.id AND u.latest_article_id IS DISTINCT FROM c.newest""",
    "tags.articles_count": """
        UPDATE tags t SET articles_count = c.n
        FROM (SELECT t2.id, count(at.article_id) AS n FROM tags t2
              LEFT JOIN article_tags at ON at.tag_id = t2.id GROUP BY t2.id) c
        WHERE t.id = c.id AND t.articles_count <> c.n""",
    "article_totals": """
        UPDATE article_totals s SET articles = coalesce(c.n, 0)
        FROM article_totals s2
        LEFT JOIN (SELECT id % 16 AS slot, count(*) AS n FROM articles GROUP BY 1) c
          ON c.slot = s2.slot
        WHERE s.slot = s2.slot AND s.articles <> coalesce(c.n, 0)""",
    "articles.favorites_count": """
        UPDATE articles a SET favorites_count = c.n
        FROM (SELECT a2.id, count(f.user_id) AS n FROM articles a2
              LEFT JOIN favorites f ON f.article_id = a2.id GROUP BY a2.id) c
        WHERE a.id = c.id AND a.favorites_count <> c.n""",
}

# Tables the fixes write, locked for their duration (SHARE ROW EXCLUSIVE: reads go on, writes
# wait) so that no write lands between a count and its update. Fixing is for maintenance
# windows or freshly loaded data; the online path is the migration's batched backfill.
LOCKED = "LOCK TABLE users, articles, tags, article_tags, favorites, article_totals"


async def mismatches(connection: asyncpg.Connection) -> list[tuple[str, int, int, int]]:
    found: list[tuple[str, int, int, int]] = []
    for query in MISMATCHES.values():
        found += [(row[0], row[1], row[2], row[3]) for row in await connection.fetch(query)]
    return found


async def fix(connection: asyncpg.Connection) -> None:
    async with connection.transaction():
        await connection.execute(LOCKED + " IN SHARE ROW EXCLUSIVE MODE")
        for query in FIXES.values():
            await connection.execute(query)


async def _main(dsn: str, repair: bool) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        if repair:
            await fix(connection)
        wrong = await mismatches(connection)
    finally:
        await connection.close()
    for what, key, maintained, counted in wrong[:50]:
        log.warning("count_mismatch", count=what, key=key, maintained=maintained, counted=counted)
    log.info("counts_checked", mismatched=len(wrong), fixed=repair)
    return 1 if wrong else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fix", action="store_true", help="set every wrong count right")
    args = parser.parse_args(argv)
    settings = get_settings()
    configure_logging(level=settings.LOG_LEVEL, log_format=settings.log_format)
    dsn = settings.DATABASE_URL.replace("postgresql+asyncpg://", "postgresql://", 1)
    return asyncio.run(_main(dsn, args.fix))


if __name__ == "__main__":
    sys.exit(main())
