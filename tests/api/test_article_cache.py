"""An article as anonymous readers see it is cached as its response body, and every change to
what they would see drops it: edits, deletion, favourites, the author's profile."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncConnection

from app.services.articles import public_article_key
from tests.api.helpers import auth, create_article, register
from tests.api.test_query_counts import count_statements


async def _anonymous(client: AsyncClient, slug: str) -> dict[str, object]:
    response = await client.get(f"/api/articles/{slug}")
    assert response.status_code == 200, response.text
    article: dict[str, object] = response.json()["article"]
    return article


async def test_second_anonymous_read_is_the_cached_body_with_no_sql(
    app: FastAPI, client: AsyncClient, db_connection: AsyncConnection
) -> None:
    author = await register(client)
    slug = (await create_article(client, author["token"], tagList=["b", "a"]))["slug"]
    first = await client.get(f"/api/articles/{slug}")
    async with count_statements(db_connection) as statements:
        second = await client.get(f"/api/articles/{slug}")
    assert statements == []
    assert second.status_code == 200
    assert second.headers["content-type"] == "application/json"
    assert second.content == first.content  # byte for byte what the route renders
    redis = app.state.resources.redis.client
    assert await redis.get(public_article_key(slug)) == first.content


async def test_signed_in_readers_read_postgres_and_get_their_own_flags(
    client: AsyncClient, db_connection: AsyncConnection
) -> None:
    author, reader = await register(client), await register(client)
    slug = (await create_article(client, author["token"]))["slug"]
    await _anonymous(client, slug)  # cached now
    await client.post(f"/api/profiles/{author['username']}/follow", headers=auth(reader["token"]))
    await client.post(f"/api/articles/{slug}/favorite", headers=auth(reader["token"]))
    async with count_statements(db_connection) as statements:
        mine = await client.get(f"/api/articles/{slug}", headers=auth(reader["token"]))
    assert len(statements) == 1
    article = mine.json()["article"]
    assert article["favorited"] is True
    assert article["author"]["following"] is True
    anonymous = await _anonymous(client, slug)
    assert anonymous["favorited"] is False
    assert anonymous["author"]["following"] is False  # type: ignore[index]


async def test_favourites_edits_and_deletion_reach_anonymous_readers(client: AsyncClient) -> None:
    author, fan = await register(client), await register(client)
    slug = (await create_article(client, author["token"], title="Original title"))["slug"]
    assert (await _anonymous(client, slug))["favoritesCount"] == 0

    await client.post(f"/api/articles/{slug}/favorite", headers=auth(fan["token"]))
    assert (await _anonymous(client, slug))["favoritesCount"] == 1
    await client.delete(f"/api/articles/{slug}/favorite", headers=auth(fan["token"]))
    assert (await _anonymous(client, slug))["favoritesCount"] == 0

    edited = await client.put(
        f"/api/articles/{slug}",
        json={"article": {"body": "A new body", "tagList": ["z"]}},
        headers=auth(author["token"]),
    )
    assert edited.status_code == 200
    after_edit = await _anonymous(client, slug)
    assert (after_edit["body"], after_edit["tagList"]) == ("A new body", ["z"])

    renamed = await client.put(
        f"/api/articles/{slug}",
        json={"article": {"title": "A new title"}},
        headers=auth(author["token"]),
    )
    new_slug = renamed.json()["article"]["slug"]
    assert (await client.get(f"/api/articles/{slug}")).status_code == 404
    assert (await _anonymous(client, new_slug))["title"] == "A new title"

    deleted = await client.delete(f"/api/articles/{new_slug}", headers=auth(author["token"]))
    assert deleted.status_code == 204
    assert (await client.get(f"/api/articles/{new_slug}")).status_code == 404


async def test_the_authors_profile_changes_reach_anonymous_readers(client: AsyncClient) -> None:
    author = await register(client)
    slugs = [(await create_article(client, author["token"], title=f"T{i}"))["slug"] for i in (1, 2)]
    for slug in slugs:
        await _anonymous(client, slug)
    changed = await client.put(
        "/api/user",
        json={"user": {"username": f"{author['username']}x", "bio": "Now with a bio"}},
        headers=auth(author["token"]),
    )
    assert changed.status_code == 200, changed.text
    for slug in slugs:
        shown = (await _anonymous(client, slug))["author"]
        assert shown == {
            "username": f"{author['username']}x",
            "bio": "Now with a bio",
            "image": None,
            "following": False,
        }


async def test_a_failed_change_drops_nothing_it_did_not_change(client: AsyncClient) -> None:
    author, other = await register(client), await register(client)
    slug = (await create_article(client, author["token"]))["slug"]
    before = await client.get(f"/api/articles/{slug}")
    refused = await client.put(
        f"/api/articles/{slug}",
        json={"article": {"body": "not mine"}},
        headers=auth(other["token"]),
    )
    assert refused.status_code == 403
    after = await client.get(f"/api/articles/{slug}")
    assert after.content == before.content
    assert orjson.loads(after.content)["article"]["body"] == "You have to believe"


async def _anonymous_list(client: AsyncClient, query: str = "") -> dict[str, Any]:
    response = await client.get(f"/api/articles{query}")
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def test_second_anonymous_list_page_is_the_cached_body_with_no_sql(
    client: AsyncClient, db_connection: AsyncConnection
) -> None:
    author = await register(client)
    for title in ("One", "Two"):
        await create_article(client, author["token"], title=title, tagList=[title.lower()])
    first = await client.get("/api/articles?limit=5")
    async with count_statements(db_connection) as statements:
        second = await client.get("/api/articles?limit=5")
    assert statements == []
    assert second.content == first.content
    # Other parameters are other pages, each read once from Postgres.
    async with count_statements(db_connection) as statements:
        tagged = await _anonymous_list(client, "?tag=one")
    assert len(statements) == 1
    assert [a["title"] for a in tagged["articles"]] == ["One"]


async def test_every_change_that_shows_on_a_page_reaches_anonymous_lists(
    client: AsyncClient,
) -> None:
    author, fan = await register(client), await register(client)
    first = await create_article(client, author["token"], title="First")
    page = await _anonymous_list(client, f"?author={author['username']}")
    assert page["articlesCount"] == 1

    second = await create_article(client, author["token"], title="Second")
    page = await _anonymous_list(client, f"?author={author['username']}")
    assert [a["title"] for a in page["articles"]] == ["Second", "First"]
    assert page["articlesCount"] == 2

    await client.post(f"/api/articles/{first['slug']}/favorite", headers=auth(fan["token"]))
    page = await _anonymous_list(client, f"?author={author['username']}")
    assert [a["favoritesCount"] for a in page["articles"]] == [0, 1]
    assert all(a["favorited"] is False for a in page["articles"])
    mine = (
        await client.get("/api/articles?favorited=" + fan["username"], headers=auth(fan["token"]))
    ).json()
    assert [a["favorited"] for a in mine["articles"]] == [True]

    await client.put("/api/user", json={"user": {"bio": "Writes"}}, headers=auth(author["token"]))
    page = await _anonymous_list(client, f"?author={author['username']}")
    assert {a["author"]["bio"] for a in page["articles"]} == {"Writes"}

    await client.delete(f"/api/articles/{second['slug']}", headers=auth(author["token"]))
    page = await _anonymous_list(client, f"?author={author['username']}")
    assert [a["title"] for a in page["articles"]] == ["First"]
    assert page["articlesCount"] == 1
