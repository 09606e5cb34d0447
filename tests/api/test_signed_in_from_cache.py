"""Signed-in readers start from the public (cached) bodies and add their own flags
(app/services/viewer_view.py), from their cached favourites and follows
(app/services/viewer_sets.py) or else one small statement, whatever the page size; never one
reader's flags in what another reader gets, and always their own latest writes."""

from __future__ import annotations

from typing import Any

import jwt
import orjson
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncConnection

from app.services import viewer_sets
from app.services.articles import public_article_key
from app.services.viewer_sets import viewer_set_key
from tests.api.helpers import auth, create_article, register
from tests.api.test_query_counts import count_statements

# A title and body that spell the flags' JSON, to show that only the real flags change.
TRICKY = '"favorited":false, "following":false'


def _user_id(token: str) -> int:
    return int(jwt.decode(token, options={"verify_signature": False})["sub"])


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


async def test_a_cached_article_costs_a_signed_in_reader_no_statement_once_their_set_is_cached(
    client: AsyncClient, db_connection: AsyncConnection
) -> None:
    _, reader, slug = await _reader_who_favourited_and_follows(client, title=TRICKY)
    public = await client.get(f"/api/articles/{slug}")  # cached now
    async with count_statements(db_connection) as statements:
        first = await client.get(f"/api/articles/{slug}", headers=auth(reader["token"]))
    assert first.status_code == 200, first.text
    assert len(statements) == 1  # the reader's favourites and follows, cached from now on
    assert "article_tags" not in statements[0]
    async with count_statements(db_connection) as statements:
        mine = await client.get(f"/api/articles/{slug}", headers=auth(reader["token"]))
    assert statements == []
    assert mine.content == first.content
    article = mine.json()["article"]
    assert _flags(article) == (True, True)
    assert article["title"] == TRICKY
    assert article["body"] == TRICKY
    assert article["favoritesCount"] == 1
    expected = public.json()
    expected["article"]["favorited"] = True
    expected["article"]["author"]["following"] = True
    assert mine.json() == expected


async def test_own_follow_and_unfollow_show_at_once_through_the_cached_set(
    client: AsyncClient,
) -> None:
    author, reader = await register(client), await register(client)
    slug = (await create_article(client, author["token"]))["slug"]
    url, headers = f"/api/articles/{slug}", auth(reader["token"])
    await client.get(url)
    assert _flags((await client.get(url, headers=headers)).json()["article"]) == (False, False)
    follow = f"/api/profiles/{author['username']}/follow"
    await client.post(follow, headers=headers)
    assert _flags((await client.get(url, headers=headers)).json()["article"]) == (False, True)
    page = (await client.get("/api/articles", headers=headers)).json()["articles"]
    assert [_flags(a) for a in page] == [(False, True)]
    await client.delete(follow, headers=headers)
    assert _flags((await client.get(url, headers=headers)).json()["article"]) == (False, False)


async def test_a_renamed_article_keeps_its_readers_favourite(client: AsyncClient) -> None:
    author, reader = await register(client), await register(client)
    slug = (await create_article(client, author["token"]))["slug"]
    headers = auth(reader["token"])
    await client.post(f"/api/articles/{slug}/favorite", headers=headers)
    await client.get(f"/api/articles/{slug}", headers=headers)  # the set, with the old slug
    renamed = await client.put(
        f"/api/articles/{slug}",
        json={"article": {"title": "A new title"}},
        headers=auth(author["token"]),
    )
    new_slug = renamed.json()["article"]["slug"]
    assert new_slug != slug
    await client.get(f"/api/articles/{new_slug}")  # public body cached under the new slug
    article = (await client.get(f"/api/articles/{new_slug}", headers=headers)).json()["article"]
    assert _flags(article) == (True, False)


async def test_a_set_filled_from_a_read_older_than_a_write_is_never_used(
    app: FastAPI, client: AsyncClient
) -> None:
    """The set is tagged with the generations read before Postgres was: a write that commits
    meanwhile drops one of them, and the set it left behind no longer matches."""
    author, reader = await register(client), await register(client)
    slug = (await create_article(client, author["token"]))["slug"]
    headers = auth(reader["token"])
    await client.get(f"/api/articles/{slug}")  # the public body
    await client.get(f"/api/articles/{slug}", headers=headers)  # and the reader's set
    redis = app.state.resources.redis.client
    key = viewer_set_key(_user_id(reader["token"]))
    stale = await redis.get(key)
    assert stale is not None
    await client.post(f"/api/profiles/{author['username']}/follow", headers=headers)
    await redis.set(key, stale)  # the racing reader's late write
    article = (await client.get(f"/api/articles/{slug}", headers=headers)).json()["article"]
    assert _flags(article) == (False, True)


async def test_a_reader_with_too_many_favourites_gets_the_flags_statement(
    client: AsyncClient, db_connection: AsyncConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(viewer_sets, "MAX_ENTRIES", 0)
    _, reader, slug = await _reader_who_favourited_and_follows(client)
    await client.get(f"/api/articles/{slug}")
    await client.get(f"/api/articles/{slug}", headers=auth(reader["token"]))  # marked too many
    for _ in range(2):
        async with count_statements(db_connection) as statements:
            mine = await client.get(f"/api/articles/{slug}", headers=auth(reader["token"]))
        assert len(statements) == 1
        assert "favorites.article_id = articles.id" in statements[0]
        assert _flags(mine.json()["article"]) == (True, True)


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


async def test_a_page_costs_no_statement_and_shows_each_readers_own(
    client: AsyncClient, db_connection: AsyncConnection
) -> None:
    author, reader, favourite = await _reader_who_favourited_and_follows(client)
    other = await register(client)
    plain = (await create_article(client, other["token"], title="Not followed"))["slug"]
    await client.get("/api/articles?limit=20")  # cached now
    await client.get("/api/articles?limit=20", headers=auth(reader["token"]))  # and the set
    async with count_statements(db_connection) as statements:
        mine = await client.get("/api/articles?limit=20", headers=auth(reader["token"]))
    assert statements == []
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


async def test_an_article_gone_from_postgres_but_still_cached_is_a_404_from_the_statement(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a cached set the flags statement finds no article and the read starts again
    from Postgres. (With one, a body cached by a read that raced the deletion is served as
    anonymous readers get it, until the deletion's second invalidation or the TTL.)"""
    monkeypatch.setattr(viewer_sets, "MAX_ENTRIES", 0)
    _, reader, _ = await _reader_who_favourited_and_follows(client)  # one of each: too many
    article = {"slug": "gone", "favorited": False, "author": {"username": "x", "following": False}}
    await app.state.resources.redis.client.set(
        public_article_key("gone"), orjson.dumps({"article": article})
    )
    response = await client.get("/api/articles/gone", headers=auth(reader["token"]))
    assert response.status_code == 404
    assert response.json()["code"] == "article_not_found"


async def test_a_feed_page_is_cached_for_its_reader_and_follows_every_change(
    client: AsyncClient, db_connection: AsyncConnection
) -> None:
    author, other, reader, fan = [await register(client) for _ in range(4)]
    headers = auth(reader["token"])
    await client.post(f"/api/profiles/{author['username']}/follow", headers=headers)
    first = (await create_article(client, author["token"], title="First"))["slug"]

    async def feed() -> list[tuple[str, int, bool]]:
        response = await client.get("/api/articles/feed?limit=10", headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["articlesCount"] == len(body["articles"])
        return [(a["slug"], a["favoritesCount"], a["favorited"]) for a in body["articles"]]

    assert await feed() == [(first, 0, False)]
    async with count_statements(db_connection) as statements:
        assert await feed() == [(first, 0, False)]
    assert statements == []
    second = (await create_article(client, author["token"], title="Second"))["slug"]
    assert await feed() == [(second, 0, False), (first, 0, False)]
    await client.post(f"/api/articles/{first}/favorite", headers=auth(fan["token"]))
    assert await feed() == [(second, 0, False), (first, 1, False)]
    await client.post(f"/api/articles/{second}/favorite", headers=headers)
    assert await feed() == [(second, 1, True), (first, 1, False)]
    theirs = (await create_article(client, other["token"], title="Theirs"))["slug"]
    await client.post(f"/api/profiles/{other['username']}/follow", headers=headers)
    assert [slug for slug, _, _ in await feed()] == [theirs, second, first]
    await client.delete(f"/api/profiles/{author['username']}/follow", headers=headers)
    assert [slug for slug, _, _ in await feed()] == [theirs]


async def test_a_favourite_answers_the_article_as_its_fan_now_sees_it_in_one_statement(
    app: FastAPI, client: AsyncClient, db_connection: AsyncConnection
) -> None:
    author, fan, other = [await register(client) for _ in range(3)]
    slug = (await create_article(client, author["token"], tagList=["b", "a"]))["slug"]
    await client.post(f"/api/profiles/{author['username']}/follow", headers=auth(fan["token"]))
    await client.post(f"/api/articles/{slug}/favorite", headers=auth(other["token"]))
    redis = app.state.resources.redis.client
    answers: list[dict[str, Any]] = []
    for cached in (False, True, True, False):
        if cached:
            await client.get(f"/api/articles/{slug}")  # the public body, cached
        else:
            await redis.delete(public_article_key(slug))
        method = "POST" if len(answers) % 2 == 0 else "DELETE"
        async with count_statements(db_connection) as statements:
            response = await client.request(
                method, f"/api/articles/{slug}/favorite", headers=auth(fan["token"])
            )
        assert response.status_code == 200, response.text
        assert len(statements) == 1
        answers.append(response.json()["article"])
    from_postgres = await client.get(f"/api/articles/{slug}", headers=auth(fan["token"]))
    assert answers[3] == from_postgres.json()["article"]
    assert [(a["favorited"], a["favoritesCount"]) for a in answers] == [
        (True, 2),
        (False, 1),
        (True, 2),
        (False, 1),
    ]
    assert answers[0] == answers[2]
    assert answers[1] == answers[3]
    assert all(a["author"]["following"] is True and a["tagList"] == ["a", "b"] for a in answers)
