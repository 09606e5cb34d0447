"""Article lists and the feed: filters, ordering, pagination, totals, no body."""

from __future__ import annotations

from typing import Any

import pytest
from httpx import AsyncClient

from tests.api.helpers import auth, create_article, register


@pytest.fixture
async def library(client: AsyncClient) -> dict[str, Any]:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    carol = await register(client, "carol")
    slugs = []
    for i in range(5):
        tags = ["even"] if i % 2 == 0 else ["odd"]
        article = await create_article(client, alice["token"], title=f"Alice {i}", tagList=tags)
        slugs.append(article["slug"])
    bobs = [
        (await create_article(client, bob["token"], title=f"Bob {i}", tagList=["bob"]))["slug"]
        for i in range(3)
    ]
    await client.post(f"/api/articles/{slugs[0]}/favorite", headers=auth(carol["token"]))
    await client.post(f"/api/articles/{bobs[1]}/favorite", headers=auth(carol["token"]))
    return {"alice": alice, "bob": bob, "carol": carol, "alice_slugs": slugs, "bob_slugs": bobs}


async def _list(client: AsyncClient, query: str = "", token: str | None = None) -> dict[str, Any]:
    headers = auth(token) if token else {}
    response = await client.get(f"/api/articles{query}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_list_is_newest_first_without_body(
    client: AsyncClient, library: dict[str, Any]
) -> None:
    body = await _list(client)
    assert body["articlesCount"] == 8
    titles = [a["title"] for a in body["articles"]]
    assert titles == [
        "Bob 2",
        "Bob 1",
        "Bob 0",
        "Alice 4",
        "Alice 3",
        "Alice 2",
        "Alice 1",
        "Alice 0",
    ]
    for article in body["articles"]:
        assert "body" not in article
        assert set(article) == {
            "slug", "title", "description", "tagList", "createdAt", "updatedAt",
            "favorited", "favoritesCount", "author",
        }  # fmt: skip


async def test_filters(client: AsyncClient, library: dict[str, Any]) -> None:
    by_tag = await _list(client, "?tag=even")
    assert by_tag["articlesCount"] == 3
    assert {a["title"] for a in by_tag["articles"]} == {"Alice 0", "Alice 2", "Alice 4"}
    by_author = await _list(client, "?author=bob")
    assert by_author["articlesCount"] == 3
    assert all(a["author"]["username"] == "bob" for a in by_author["articles"])
    favorited = await _list(client, "?favorited=carol")
    assert {a["title"] for a in favorited["articles"]} == {"Alice 0", "Bob 1"}
    combined = await _list(client, "?author=alice&tag=odd")
    assert {a["title"] for a in combined["articles"]} == {"Alice 1", "Alice 3"}
    for query in ("?tag=missing", "?author=nobody", "?favorited=nobody", "?author=bob&tag=even"):
        empty = await _list(client, query)
        assert empty == {"articles": [], "articlesCount": 0}


async def test_pagination_edges(client: AsyncClient, library: dict[str, Any]) -> None:
    page = await _list(client, "?limit=3&offset=0")
    assert [a["title"] for a in page["articles"]] == ["Bob 2", "Bob 1", "Bob 0"]
    assert page["articlesCount"] == 8
    middle = await _list(client, "?limit=3&offset=3")
    assert [a["title"] for a in middle["articles"]] == ["Alice 4", "Alice 3", "Alice 2"]
    last = await _list(client, "?limit=3&offset=6")
    assert len(last["articles"]) == 2
    assert last["articlesCount"] == 8
    beyond = await _list(client, "?limit=3&offset=100")
    assert beyond == {"articles": [], "articlesCount": 8}
    one = await _list(client, "?limit=1")
    assert len(one["articles"]) == 1
    assert one["articlesCount"] == 8
    for bad in ("?limit=0", "?limit=-1", "?offset=-1", "?limit=101", "?limit=abc",
                "?limit=99999999999999999999999"):  # fmt: skip
        response = await client.get(f"/api/articles{bad}")
        assert response.status_code == 422, bad
        assert response.json()["code"] == "validation_error"


async def test_favorited_flag_is_personal(client: AsyncClient, library: dict[str, Any]) -> None:
    carol = library["carol"]
    body = await _list(client, "", carol["token"])
    flagged = {a["title"] for a in body["articles"] if a["favorited"]}
    assert flagged == {"Alice 0", "Bob 1"}
    counts = {a["title"]: a["favoritesCount"] for a in body["articles"]}
    assert counts["Alice 0"] == 1
    assert counts["Alice 1"] == 0


async def test_feed_follows_and_unfollows(client: AsyncClient, library: dict[str, Any]) -> None:
    carol = library["carol"]
    token = carol["token"]
    empty = await client.get("/api/articles/feed", headers=auth(token))
    assert empty.json() == {"articles": [], "articlesCount": 0}
    await client.post("/api/profiles/bob/follow", headers=auth(token))
    feed = (await client.get("/api/articles/feed", headers=auth(token))).json()
    assert feed["articlesCount"] == 3
    assert [a["title"] for a in feed["articles"]] == ["Bob 2", "Bob 1", "Bob 0"]
    assert all(a["author"]["following"] for a in feed["articles"])
    assert all("body" not in a for a in feed["articles"])
    await client.post("/api/profiles/alice/follow", headers=auth(token))
    paged = (await client.get("/api/articles/feed?limit=2&offset=2", headers=auth(token))).json()
    assert paged["articlesCount"] == 8
    assert [a["title"] for a in paged["articles"]] == ["Bob 0", "Alice 4"]
    await client.delete("/api/profiles/bob/follow", headers=auth(token))
    after = (await client.get("/api/articles/feed", headers=auth(token))).json()
    assert after["articlesCount"] == 5
    assert {a["author"]["username"] for a in after["articles"]} == {"alice"}
    assert (await client.get("/api/articles/feed")).status_code == 401


async def test_tags_are_popular_first_and_refresh_after_writes(
    client: AsyncClient, library: dict[str, Any]
) -> None:
    tags = (await client.get("/api/tags")).json()["tags"]
    assert tags == ["bob", "even", "odd"]  # 3 each for bob and even, sorted by name on ties
    await create_article(client, library["carol"]["token"], title="New", tagList=["fresh"])
    assert "fresh" in (await client.get("/api/tags")).json()["tags"]


async def test_filtered_pages_stop_at_a_documented_depth(
    client: AsyncClient, library: dict[str, Any]
) -> None:
    """Filtered lists and the feed skip `offset` index entries: past 10,000 they answer 422
    (what that bound saves: docs/performance.md, "Scale"). The global list seeks, so any
    offset is served."""
    token = library["carol"]["token"]
    for path, headers in (
        ("/api/articles?tag=even&offset=10001", {}),
        ("/api/articles?author=alice&offset=10001", {}),
        ("/api/articles?favorited=carol&offset=10001", {}),
        ("/api/articles/feed?offset=10001", auth(token)),
    ):
        response = await client.get(path, headers=headers)
        assert response.status_code == 422, (path, response.text)
        assert response.json()["code"] == "offset_too_deep"
    deepest = await client.get("/api/articles?tag=even&offset=10000")
    assert deepest.status_code == 200
    assert deepest.json() == {"articles": [], "articlesCount": 3}
    beyond = await client.get("/api/articles?offset=5000000")
    assert beyond.json() == {"articles": [], "articlesCount": 8}
