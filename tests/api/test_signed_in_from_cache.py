"""Signed-in readers start from the public (cached) bodies and read only their own flags from
Postgres (app/services/viewer_view.py): one small statement, whatever the page size, and never
one reader's flags in what another reader gets."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncConnection

from app.services.articles import public_article_key
from tests.api.helpers import auth, create_article, register
from tests.api.test_query_counts import count_statements

# A title and body that spell the flags' JSON, to show that only the real flags change.
TRICKY = '"favorited":false, "following":false'


def _flags(article: dict[str, object]) -> tuple[object, object]:
    author = article["author"]
    assert isinstance(author, dict)
    return article["favorited"], author["following"]


async def _reader_who_favourited_and_follows(
    client: AsyncClient, *, title: str = "Cached for everyone"
) -> tuple[dict[str, Any], dict[str, Any], str]:
    author, reader = await register(client), await register(client)
    slug = (await create_article(client, author["token"], title=title, body=TRICKY))["slug"]
    await client.post(f"/api/profiles/{author['username']}/follow", headers=auth(reader["token"]))
    await client.post(f"/api/articles/{slug}/favorite", headers=auth(reader["token"]))
    return author, reader, slug


async def test_a_cached_article_costs_a_signed_in_reader_one_flags_statement(
    client: AsyncClient, db_connection: AsyncConnection
) -> None:
    _, reader, slug = await _reader_who_favourited_and_follows(client, title=TRICKY)
    public = await client.get(f"/api/articles/{slug}")  # cached now
    async with count_statements(db_connection) as statements:
        mine = await client.get(f"/api/articles/{slug}", headers=auth(reader["token"]))
    assert mine.status_code == 200, mine.text
    assert len(statements) == 1
    # The flags alone: no author, no tags, no body.
    assert "article_tags" not in statements[0]
    assert "users" not in statements[0]
    article = mine.json()["article"]
    assert _flags(article) == (True, True)
    assert article["title"] == TRICKY
    assert article["body"] == TRICKY
    assert article["favoritesCount"] == 1
    expected = public.json()
    expected["article"]["favorited"] = True
    expected["article"]["author"]["following"] = True
    assert mine.json() == expected


async def test_a_signed_in_reader_who_fills_the_cache_leaves_no_flags_in_it(
    app: FastAPI, client: AsyncClient
) -> None:
    _, reader, slug = await _reader_who_favourited_and_follows(client)
    # The cache is empty for this article (the favourite dropped it): the reader fills it.
    mine = await client.get(f"/api/articles/{slug}", headers=auth(reader["token"]))
    assert _flags(mine.json()["article"]) == (True, True)
    cached = await app.state.resources.redis.client.get(public_article_key(slug))
    assert cached is not None
    assert _flags(orjson.loads(cached)["article"]) == (False, False)
    stranger = await register(client)
    theirs = await client.get(f"/api/articles/{slug}", headers=auth(stranger["token"]))
    anonymous = await client.get(f"/api/articles/{slug}")
    assert _flags(theirs.json()["article"]) == (False, False)
    assert _flags(anonymous.json()["article"]) == (False, False)
    assert theirs.json() == anonymous.json()


async def test_a_page_costs_one_flags_statement_and_shows_each_readers_own(
    client: AsyncClient, db_connection: AsyncConnection
) -> None:
    author, reader, favourite = await _reader_who_favourited_and_follows(client)
    other = await register(client)
    plain = (await create_article(client, other["token"], title="Not followed"))["slug"]
    await client.get("/api/articles?limit=20")  # cached now
    async with count_statements(db_connection) as statements:
        mine = await client.get("/api/articles?limit=20", headers=auth(reader["token"]))
    assert len(statements) == 1
    assert "article_tags" not in statements[0]
    by_slug = {a["slug"]: a for a in mine.json()["articles"]}
    assert _flags(by_slug[favourite]) == (True, True)
    assert _flags(by_slug[plain]) == (False, False)
    assert mine.json()["articlesCount"] == 2
    # A page filled by a signed-in reader is public for the next one.
    fresh = await client.get(f"/api/articles?limit=20&author={author['username']}")
    filled = await client.get(
        f"/api/articles?limit=20&author={author['username']}", headers=auth(reader["token"])
    )
    assert [_flags(a) for a in filled.json()["articles"]] == [(True, True)]
    again = await client.get(f"/api/articles?limit=20&author={author['username']}")
    assert again.json() == fresh.json()
    assert [_flags(a) for a in again.json()["articles"]] == [(False, False)]


async def test_own_favourite_shows_at_once_in_the_readers_cached_page(client: AsyncClient) -> None:
    author, reader = await register(client), await register(client)
    slug = (await create_article(client, author["token"]))["slug"]
    before = await client.get("/api/articles", headers=auth(reader["token"]))
    assert before.json()["articles"][0]["favoritesCount"] == 0
    await client.post(f"/api/articles/{slug}/favorite", headers=auth(reader["token"]))
    after = await client.get("/api/articles", headers=auth(reader["token"]))
    article = after.json()["articles"][0]
    assert (article["favorited"], article["favoritesCount"]) == (True, 1)
    await client.delete(f"/api/articles/{slug}/favorite", headers=auth(reader["token"]))
    undone = (await client.get(f"/api/articles/{slug}", headers=auth(reader["token"]))).json()
    assert (undone["article"]["favorited"], undone["article"]["favoritesCount"]) == (False, 0)


async def test_an_article_gone_from_postgres_but_still_cached_is_a_404_when_signed_in(
    app: FastAPI, client: AsyncClient
) -> None:
    reader = await register(client)
    body = orjson.dumps({"article": {"slug": "gone", "favorited": False}})
    await app.state.resources.redis.client.set(public_article_key("gone"), body)
    response = await client.get("/api/articles/gone", headers=auth(reader["token"]))
    assert response.status_code == 404
    assert response.json()["code"] == "article_not_found"
