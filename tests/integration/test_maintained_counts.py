"""The maintained counts are exact: after every write path of the API, and after the migration
that introduces them runs while writers keep writing.

`app.db.recount.mismatches` compares every maintained count with a count of the rows; an empty
answer is the proof.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Iterator

import asyncpg
import pytest
from httpx import Response

from app.core.config import Settings
from app.db.recount import fix, mismatches
from app.repositories.articles import _anchored_ids, _page_statements
from app.repositories.driver import CompiledRead
from devstack.servers import PostgresServer
from tests.api.helpers import auth, create_article, register
from tests.conftest import alembic
from tests.support.apps import serve

pytestmark = pytest.mark.slow

BEFORE_COUNTS = "5c1d7e2a9f40"  # the revision before "maintained counts"


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _mismatches(url: str) -> list[tuple[str, int, int, int]]:
    connection = await asyncpg.connect(_dsn(url))
    try:
        return await mismatches(connection)
    finally:
        await connection.close()


async def test_every_write_path_keeps_the_counts_exact(
    settings_factory: Callable[..., Settings], migrated: str
) -> None:
    async with serve(settings_factory()) as client:
        writer, fan = await register(client), await register(client)
        tag = f"counted-{uuid.uuid4().hex[:8]}"
        first = await create_article(client, writer["token"], tagList=[tag, "shared-tag"])
        second = await create_article(client, writer["token"], tagList=[tag])
        for slug in (first["slug"], second["slug"]):
            for _ in range(2):  # the second favourite changes nothing
                response = await client.post(
                    f"/api/articles/{slug}/favorite", headers=auth(fan["token"])
                )
                assert response.status_code == 200
        await client.post(
            f"/api/articles/{first['slug']}/comments",
            json={"comment": {"body": "counted?"}},
            headers=auth(fan["token"]),
        )

        async def total(query: str) -> Response:
            return await client.get(f"/api/articles?{query}")

        by_tag = (await total(f"tag={tag}")).json()
        assert by_tag["articlesCount"] == len(by_tag["articles"]) == 2
        by_fan = (await total(f"favorited={fan['username']}")).json()
        assert by_fan["articlesCount"] == 2
        # Retagging replaces the links; unfavouriting twice removes one favourite.
        retagged = await client.put(
            f"/api/articles/{second['slug']}",
            json={"article": {"tagList": ["elsewhere"]}},
            headers=auth(writer["token"]),
        )
        assert retagged.status_code == 200
        for _ in range(2):
            await client.delete(
                f"/api/articles/{second['slug']}/favorite", headers=auth(fan["token"])
            )
        assert (await total(f"tag={tag}")).json()["articlesCount"] == 1
        assert (await total(f"favorited={fan['username']}")).json()["articlesCount"] == 1
        # Deleting an article cascades to its favourites, tags and comments: counted too.
        deleted = await client.delete(
            f"/api/articles/{first['slug']}", headers=auth(writer["token"])
        )
        assert deleted.status_code in (200, 204)
        assert (await total(f"tag={tag}")).json()["articlesCount"] == 0
        assert (await total(f"author={writer['username']}")).json()["articlesCount"] == 1
        assert (await total(f"favorited={fan['username']}")).json()["articlesCount"] == 0
        tags = (await client.get("/api/tags")).json()["tags"]
        assert tag not in tags  # a tag no article uses any more is not "popular"

    assert await _mismatches(migrated) == []


@pytest.fixture
def database(postgres: PostgresServer) -> Iterator[str]:
    name = f"counts_{uuid.uuid4().hex[:12]}"
    postgres.create_database(name)
    yield postgres.url(name)
    postgres.drop_database(name)


SEED = """
INSERT INTO users (email, username, password_hash)
  SELECT 'u' || g || '@example.com', 'u' || g, 'x' FROM generate_series(1, 2500) g;
INSERT INTO tags (name) SELECT 'tag' || g FROM generate_series(1, 40) g;
INSERT INTO articles (slug, title, description, body, author_id)
  SELECT 'a-' || g, 'A ' || g, 'd', 'b', 1 + (g * 7919) % 2500 FROM generate_series(1, 6000) g;
INSERT INTO article_tags (article_id, tag_id)
  SELECT a.id, t.id FROM articles a JOIN tags t ON t.id <= 1 + a.id % 4;
INSERT INTO favorites (user_id, article_id)
  SELECT 1 + (g * 31) % 2500, 1 + (g * 17) % 6000 FROM generate_series(1, 20000) g
  ON CONFLICT DO NOTHING;
UPDATE articles a
  SET favorites_count = (SELECT count(*) FROM favorites f WHERE f.article_id = a.id);
"""


async def _keep_writing(dsn: str, stop: asyncio.Event, done: list[int]) -> None:
    """Articles, tags and favourites created and deleted until `stop`, as users would (in the
    app's lock order: a favourite locks its article first). A transaction that loses a
    deadlock to the migration's batch is rolled back whole, and counted in done[1]."""
    rng = random.Random(7)  # test data, not secrets
    connection = await asyncpg.connect(dsn)
    try:
        while not stop.is_set():
            try:
                await _write_once(connection, rng)
            except asyncpg.DeadlockDetectedError:
                done[1] += 1
                continue
            done[0] += 1
    finally:
        await connection.close()


async def _write_once(connection: asyncpg.Connection, rng: random.Random) -> None:
    user = rng.randint(1, 2500)
    choice = rng.random()
    async with connection.transaction():
        if choice < 0.4:
            article = await connection.fetchval(
                "INSERT INTO articles (slug, title, description, body, author_id) "
                "VALUES ($1, 't', 'd', 'b', $2) RETURNING id",
                f"w-{uuid.uuid4().hex}",
                user,
            )
            await connection.execute(
                "INSERT INTO article_tags (article_id, tag_id) VALUES ($1, $2)",
                article,
                rng.randint(1, 40),
            )
        elif choice < 0.55:
            await connection.execute(
                "DELETE FROM articles WHERE id = (SELECT id FROM articles "
                "WHERE id > $1 ORDER BY id LIMIT 1)",
                rng.randint(1, 6000),
            )
        elif choice < 0.85:
            await connection.execute(
                "WITH target AS (SELECT id FROM articles WHERE id > $2 ORDER BY id "
                "LIMIT 1 FOR NO KEY UPDATE), added AS (INSERT INTO favorites "
                "(user_id, article_id) SELECT $1, id FROM target "
                "ON CONFLICT DO NOTHING RETURNING article_id) "
                "UPDATE articles SET favorites_count = favorites_count + 1 "
                "WHERE id IN (SELECT article_id FROM added)",
                user,
                rng.randint(1, 6000),
            )
        else:
            await connection.execute(
                "WITH target AS (SELECT id FROM articles WHERE id = (SELECT article_id "
                "FROM favorites WHERE user_id = $1 LIMIT 1) FOR NO KEY UPDATE), "
                "removed AS (DELETE FROM favorites WHERE user_id = $1 "
                "AND article_id IN (SELECT id FROM target) RETURNING article_id) "
                "UPDATE articles SET favorites_count = favorites_count - 1 "
                "WHERE id IN (SELECT article_id FROM removed)",
                user,
            )


async def test_the_migration_counts_exactly_while_writers_write(database: str) -> None:
    alembic(database, "upgrade", BEFORE_COUNTS)
    seeding = await asyncpg.connect(_dsn(database))
    await seeding.execute(SEED)
    await seeding.close()

    stop, done = asyncio.Event(), [0, 0]
    writers = [asyncio.create_task(_keep_writing(_dsn(database), stop, done)) for _ in range(3)]
    await asyncio.sleep(0.3)  # writing before the migration starts
    before = done[0]
    started = time.perf_counter()
    await asyncio.to_thread(alembic, database, "upgrade", "head")
    took = time.perf_counter() - started
    during = done[0] - before
    await asyncio.sleep(0.3)  # and after it
    stop.set()
    await asyncio.gather(*writers)

    print(
        f"migration: {took:.2f} s, {during} write transactions committed meanwhile, "
        f"{done[1]} rolled back by a deadlock"
    )
    assert during > 0, "no write ran during the migration: this proved nothing"
    assert await _mismatches(database) == []


async def test_recount_finds_and_fixes_a_wrong_count(database: str) -> None:
    alembic(database, "upgrade", "head")
    connection = await asyncpg.connect(_dsn(database))
    try:
        await connection.execute(SEED)
        # Written behind the triggers' back, as a restore with triggers disabled would.
        await connection.execute("UPDATE tags SET articles_count = articles_count + 5 WHERE id = 3")
        await connection.execute("UPDATE article_totals SET articles = 0")
        wrong = await mismatches(connection)
        assert ("tags.articles_count", 3) in {(what, key) for what, key, _, _ in wrong}
        assert any(what == "article_totals" for what, *_ in wrong)
        await fix(connection)
        assert await mismatches(connection) == []
    finally:
        await connection.close()


async def test_a_deep_page_seeks_to_exactly_the_page_plain_offset_would_give(
    database: str,
) -> None:
    """Buckets full, sparse (deletions) and empty; pages inside a bucket, across two, at the
    very end and past it: always the ids that OFFSET would have returned."""
    alembic(database, "upgrade", "head")
    anchored = CompiledRead.of(_anchored_ids())
    connection = await asyncpg.connect(_dsn(database))
    try:
        await connection.execute(SEED)
        # Holes: a whole bucket gone, every third article of another, scattered ones.
        await connection.execute(
            "DELETE FROM articles WHERE id BETWEEN 1024 AND 1535 OR (id BETWEEN 2048 AND 2559 "
            "AND id % 3 = 0) OR id % 97 = 0"
        )
        total = await connection.fetchval("SELECT count(*) FROM articles")
        for offset in (0, 1, 19, 20, 511, 512, 513, 1000, 2000, 3333, total - 20, total - 1,
                       total, total + 5):  # fmt: skip
            for limit in (1, 20, 100):
                plain = await connection.fetch(
                    "SELECT id FROM articles ORDER BY id DESC OFFSET $1 LIMIT $2", offset, limit
                )
                sought = await connection.fetch(
                    anchored.sql, *anchored.arguments({"offset": offset, "limit": limit})
                )
                assert [r["id"] for r in sought] == [r["id"] for r in plain], (offset, limit)
        # And the plan reads a handful of buckets and under 512 index entries, not 3,000 rows.
        plan = await connection.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + anchored.sql, 3333, 20)
        assert "Seq Scan" not in str(plan)
    finally:
        await connection.close()


async def test_a_favourite_with_nothing_to_change_waits_for_no_lock(
    settings_factory: Callable[..., Settings], migrated: str
) -> None:
    """A repeated favourite, and an unfavourite of an article never favourited, lock nothing;
    a real change still locks the article first (the order that keeps it from deadlocking with
    the article's deletion), so it waits for another holder and then counts."""
    async with serve(settings_factory()) as client:
        author, fan = await register(client), await register(client)
        slug = (await create_article(client, author["token"]))["slug"]
        url = f"/api/articles/{slug}/favorite"
        await client.post(url, headers=auth(fan["token"]))
        holder = await asyncpg.connect(_dsn(migrated))
        held = holder.transaction()
        await held.start()
        await holder.execute("SELECT 1 FROM articles WHERE slug = $1 FOR UPDATE", slug)
        try:
            again = await asyncio.wait_for(client.post(url, headers=auth(fan["token"])), 3)
            never = await asyncio.wait_for(client.delete(url, headers=auth(author["token"])), 3)
            change = asyncio.create_task(client.delete(url, headers=auth(fan["token"])))
            await asyncio.sleep(0.5)
            assert not change.done()  # waiting for the holder's lock
        finally:
            await held.rollback()
            await holder.close()
        removed = await asyncio.wait_for(change, 5)
    assert (again.json()["article"]["favorited"], again.json()["article"]["favoritesCount"]) == (
        True,
        1,
    )
    assert (never.json()["article"]["favorited"], never.json()["article"]["favoritesCount"]) == (
        False,
        1,
    )
    assert removed.json()["article"]["favoritesCount"] == 0
    assert await _mismatches(migrated) == []


async def test_the_feed_page_is_exactly_the_page_of_every_followed_article(
    database: str,
) -> None:
    """The feed reads only the followed authors whose newest articles are newest
    (`users.latest_article_id`): for every offset and limit, after deleting authors' newest
    articles and writing new ones, it gives what filtering every followed article would."""
    alembic(database, "upgrade", "head")
    feed, feed_total = _page_statements(True, False, False, False, True)
    connection = await asyncpg.connect(_dsn(database))
    try:
        await connection.execute(SEED)
        # One prolific author (400 articles), followed authors with none, and 300 others.
        await connection.execute(
            "INSERT INTO articles (slug, title, description, body, author_id) "
            "SELECT 'p-' || g, 'P', 'd', 'b', 2 FROM generate_series(1, 400) g"
        )
        await connection.execute(
            "INSERT INTO follows (follower_id, followee_id) SELECT 1, g "
            "FROM generate_series(2, 2500, 8) g"
        )
        plain = (
            "SELECT a.id FROM articles a JOIN follows f ON f.followee_id = a.author_id "
            "WHERE f.follower_id = 1 ORDER BY a.id DESC LIMIT $1 OFFSET $2"
        )

        async def same_pages() -> None:
            everything = await connection.fetchval(
                "SELECT count(*) FROM articles a JOIN follows f ON f.followee_id = a.author_id "
                "WHERE f.follower_id = 1"
            )
            for offset in (0, 1, 19, 20, 21, 57, 399, 400, everything - 3, everything + 2):
                for limit in (1, 20, 100):
                    arguments = {"viewer_id": 1, "limit": limit, "offset": offset}
                    rows = await connection.fetch(feed.sql, *feed.arguments(arguments))
                    expected = [r["id"] for r in await connection.fetch(plain, limit, offset)]
                    assert [r["id"] for r in rows] == expected, (offset, limit)
                    if rows:
                        assert rows[0]["total"] == everything
            total = await connection.fetchval(
                feed_total.sql, *feed_total.arguments({"viewer_id": 1})
            )
            assert total == everything

        await same_pages()
        # Every followed author's newest article deleted, twice over, and some written anew.
        for _ in range(2):
            await connection.execute(
                "DELETE FROM articles WHERE id IN (SELECT u.latest_article_id FROM users u "
                "JOIN follows f ON f.followee_id = u.id WHERE f.follower_id = 1)"
            )
        await connection.execute(
            "INSERT INTO articles (slug, title, description, body, author_id) "
            "SELECT 'n-' || g, 'N', 'd', 'b', 2 + (g * 8) % 2496 FROM generate_series(1, 50) g"
        )
        await connection.execute("DELETE FROM articles WHERE author_id = 10")  # all of one
        await same_pages()
        assert await mismatches(connection) == []
        plan = await connection.fetchval(
            "EXPLAIN (FORMAT JSON) " + feed.sql,
            *feed.arguments({"viewer_id": 1, "limit": 20, "offset": 0}),
        )
        assert "Seq Scan" not in str(plan)
    finally:
        await connection.close()


async def test_racing_deletes_keep_each_authors_newest_article_exact(database: str) -> None:
    """Two transactions deleting the same author's articles, newest first, each committing
    while the other waits for the author's row: the survivor's newest id is still right."""
    alembic(database, "upgrade", "head")
    dsn = _dsn(database)
    setup = await asyncpg.connect(dsn)
    await setup.execute(SEED)
    author = 5
    await setup.execute(
        "INSERT INTO articles (slug, title, description, body, author_id) "
        "SELECT 'r-' || g, 'R', 'd', 'b', $1 FROM generate_series(1, 4) g",
        author,
    )
    ids = [
        r["id"]
        for r in await setup.fetch(
            "SELECT id FROM articles WHERE author_id = $1 ORDER BY id DESC", author
        )
    ]
    assert len(ids) >= 5
    first, second = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        for _ in range(2):
            newest, next_newest = ids[0], ids[1]
            one, two = first.transaction(), second.transaction()
            await one.start()
            await two.start()
            await first.execute("DELETE FROM articles WHERE id = $1", newest)
            # The second delete waits for the first's lock on the author's row.
            waiting = asyncio.create_task(
                second.execute("DELETE FROM articles WHERE id = $1", next_newest)
            )
            await asyncio.sleep(0.2)
            assert not waiting.done()
            await one.commit()
            await waiting
            await two.commit()
            ids = ids[2:]
            latest = await setup.fetchval(
                "SELECT latest_article_id FROM users WHERE id = $1", author
            )
            assert latest == (ids[0] if ids else None)
        assert await mismatches(setup) == []
    finally:
        for connection in (first, second, setup):
            await connection.close()
