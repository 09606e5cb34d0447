"""The bench's bulk loader (bench/scale/loader.py) at a tiny size: the rows it writes keep the
schema's rules and the special cases the scale workloads rely on, every maintained count agrees
with the rows, and a second run reuses the set."""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from bench.scale import loader
from bench.scale.plan import FAN_ID, PROLIFIC_ID, READER_ID, ScalePlan
from devstack.servers import PostgresServer
from tests.conftest import alembic

pytestmark = pytest.mark.slow

PLAN = ScalePlan(
    articles=200, users=300, tags=20, stars=2, reader_follows=50, hot_comments=100, fan_every=10
)


@pytest.fixture(scope="module")
def scale_database(postgres: PostgresServer) -> Iterator[str]:
    name = f"bench_scale_{uuid.uuid4().hex[:12]}"
    postgres.create_database(name)
    url = postgres.url(name)
    alembic(url, "upgrade", "head")
    yield url
    postgres.drop_database(name)


@pytest.fixture(scope="module")
async def loaded(scale_database: str) -> loader.Manifest:
    return await loader.ensure_loaded(scale_database, "tiny", PLAN, out=io.StringIO())


@pytest.fixture
async def conn(scale_database: str, loaded: loader.Manifest) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(loader.asyncpg_url(scale_database))
    yield connection
    await connection.close()


async def test_counts_and_tags(conn: asyncpg.Connection, loaded: loader.Manifest) -> None:
    assert loaded.counts["articles"] == PLAN.articles
    assert loaded.counts["users"] == PLAN.users
    per_article = await conn.fetch(
        "SELECT a.id, count(at.tag_id) AS n FROM articles a "
        "LEFT JOIN article_tags at ON at.article_id = a.id GROUP BY a.id"
    )
    # 1-5 drawn tags, plus the rare tag on a few.
    assert all(1 <= row["n"] <= 6 for row in per_article)
    rare = await conn.fetchval(
        "SELECT count(*) FROM article_tags at JOIN tags t ON t.id = at.tag_id WHERE t.name = $1",
        loaded.identities["rare_tag"],
    )
    assert rare == PLAN.rare_articles
    assert loaded.identities["popular_tag"] == "tag0001"


async def test_no_orphans_and_no_self_follow(conn: asyncpg.Connection) -> None:
    # Loaded without foreign-key checks: the rows must be consistent by construction.
    orphans = {
        "articles": "SELECT count(*) FROM articles a LEFT JOIN users u ON u.id = a.author_id "
        "WHERE u.id IS NULL",
        "article_tags": "SELECT count(*) FROM article_tags x LEFT JOIN articles a "
        "ON a.id = x.article_id LEFT JOIN tags t ON t.id = x.tag_id "
        "WHERE a.id IS NULL OR t.id IS NULL",
        "favorites": "SELECT count(*) FROM favorites f LEFT JOIN users u ON u.id = f.user_id "
        "LEFT JOIN articles a ON a.id = f.article_id WHERE u.id IS NULL OR a.id IS NULL",
        "follows": "SELECT count(*) FROM follows f LEFT JOIN users a ON a.id = f.follower_id "
        "LEFT JOIN users b ON b.id = f.followee_id WHERE a.id IS NULL OR b.id IS NULL",
        "comments": "SELECT count(*) FROM comments c LEFT JOIN users u ON u.id = c.author_id "
        "LEFT JOIN articles a ON a.id = c.article_id WHERE u.id IS NULL OR a.id IS NULL",
    }
    for table, query in orphans.items():
        assert await conn.fetchval(query) == 0, table
    assert await conn.fetchval("SELECT count(*) FROM follows WHERE follower_id = followee_id") == 0


async def test_special_cases(conn: asyncpg.Connection, loaded: loader.Manifest) -> None:
    ids = loaded.identities
    follows = await conn.fetchval("SELECT count(*) FROM follows WHERE follower_id = $1", READER_ID)
    assert follows == PLAN.reader_follows
    for star in ids["stars"]:
        followers = await conn.fetchval(
            "SELECT count(*) FROM follows f JOIN users u ON u.id = f.followee_id "
            "WHERE u.username = $1",
            star,
        )
        assert followers == PLAN.regular_users
    hot = await conn.fetchval(
        "SELECT count(*) FROM comments c JOIN articles a ON a.id = c.article_id WHERE a.slug = $1",
        ids["hot_article"],
    )
    assert hot == PLAN.hot_comments
    fan = await conn.fetchval("SELECT count(*) FROM favorites WHERE user_id = $1", FAN_ID)
    assert fan == PLAN.articles // PLAN.fan_every
    written = "SELECT count(*) FROM articles WHERE author_id = $1"
    prolific = await conn.fetchval(written, PROLIFIC_ID)
    assert prolific == PLAN.articles // PLAN.prolific_every
    assert len(ids["slugs"]) == len(set(ids["slugs"])) == loader.SAMPLES
    names = await conn.fetch("SELECT username FROM users WHERE id IN ($1, $2)", READER_ID, FAN_ID)
    assert {r["username"] for r in names} == {ids["reader"]["username"], ids["fan"]}


async def test_created_at_grows_with_id(conn: asyncpg.Connection) -> None:
    out_of_order = await conn.fetchval(
        "SELECT count(*) FROM (SELECT created_at < lag(created_at) OVER (ORDER BY id) AS back "
        "FROM articles) x WHERE back"
    )
    assert out_of_order == 0
    span = await conn.fetchval("SELECT max(created_at) - min(created_at) FROM articles")
    assert span.days >= PLAN.span_days * 0.99  # article 1 to article N: (N - 1) / N of it


async def test_maintained_counts_agree(conn: asyncpg.Connection) -> None:
    wrong = await conn.fetchval(
        "SELECT count(*) FROM articles a WHERE favorites_count <> "
        "(SELECT count(*) FROM favorites f WHERE f.article_id = a.id)"
    )
    assert wrong == 0
    assert await loader._app_recount_mismatches(conn) in (None, 0)
    if await loader.has_column(conn, "article_id_buckets", "articles"):
        buckets = await conn.fetchval("SELECT sum(articles) FROM article_id_buckets")
        assert buckets == PLAN.articles
    if await loader.has_column(conn, "article_totals", "articles"):
        total = await conn.fetchval("SELECT sum(articles) FROM article_totals")
        assert total == PLAN.articles
    # The app inserts after the loaded rows: the identities continue past them.
    next_id = await conn.fetchval("SELECT nextval(pg_get_serial_sequence('articles', 'id'))")
    assert next_id > PLAN.articles


async def test_a_second_run_reuses_the_set(scale_database: str, loaded: loader.Manifest) -> None:
    again = await loader.ensure_loaded(scale_database, "tiny", PLAN, out=io.StringIO())
    assert again.reused
    assert again.identities == loaded.identities
    assert again.counts == loaded.counts


def test_plans_are_read_from_auto_explain_lines() -> None:
    from bench.scale.postgres import plans_in

    plan = (
        '{"Query Text": "SELECT 1", "Plan": {"Node Type": "Nested Loop", '
        '"Shared Hit Blocks": 5, "Shared Read Blocks": 1, "Plans": ['
        '{"Node Type": "Seq Scan", "Relation Name": "tags", "Actual Loops": 20}, '
        '{"Node Type": "Index Scan", "Relation Name": "articles", "Index Name": "pk_articles"}]}}'
    )
    log = (
        "2026-12-06 09:00:00.000 UTC [1] LOG:  duration: 3.4 ms  plan:\n\t" + plan + "\n"
        "2026-12-06 09:00:00.100 UTC [1] LOG:  duration: 0.1 ms  plan:\n\t"
        '{"Query Text": "SELECT pg_reload_conf()", "Plan": {"Node Type": "Result"}}\n'
    )
    (found,) = plans_in(log)
    assert found.ms == 3.4
    assert (found.hit, found.read) == (5, 1)
    assert found.shape == "Nested Loop(Seq Scan tags x20, Index Scan articles using pk_articles)"
    assert found.seq_scans == ["tags"]
