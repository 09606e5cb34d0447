"""Article CRUD, slugs, ownership, favourites."""

from __future__ import annotations

import re

from httpx import AsyncClient

from tests.api.helpers import auth, create_article, error_messages, register

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


async def test_create_and_get_article(client: AsyncClient) -> None:
    author = await register(client, "writer")
    article = await create_article(client, author["token"], tagList=["training", "dragons"])
    assert article["slug"].startswith("how-to-train-your-dragon-")
    assert article["tagList"] == ["dragons", "training"]
    assert article["favorited"] is False
    assert article["favoritesCount"] == 0
    assert article["author"] == {
        "username": "writer",
        "bio": None,
        "image": None,
        "following": False,
    }
    assert TIMESTAMP.match(article["createdAt"])
    assert TIMESTAMP.match(article["updatedAt"])
    fetched = await client.get(f"/api/articles/{article['slug']}")
    assert fetched.status_code == 200
    assert fetched.json()["article"] == article


async def test_same_title_twice_gets_distinct_slugs(client: AsyncClient) -> None:
    first = await register(client)
    second = await register(client)
    a = await create_article(client, first["token"])
    b = await create_article(client, second["token"])
    c = await create_article(client, second["token"])
    assert len({a["slug"], b["slug"], c["slug"]}) == 3


async def test_unicode_and_symbol_titles_slugify(client: AsyncClient) -> None:
    user = await register(client)
    article = await create_article(client, user["token"], title="Crème brûlée: 100% *tasty*!")
    assert re.match(r"^creme-brulee-100-tasty-[0-9a-f]{8}$", article["slug"])
    symbols = await create_article(client, user["token"], title="!!!")
    assert re.match(r"^article-[0-9a-f]{8}$", symbols["slug"])


async def test_create_article_validation(client: AsyncClient) -> None:
    user = await register(client)
    response = await client.post(
        "/api/articles",
        json={"article": {"title": "  ", "description": "d"}},
        headers=auth(user["token"]),
    )
    assert response.status_code == 422
    messages = error_messages(response)
    assert "title can't be blank" in messages
    assert "body can't be blank" in messages
    too_many_tags = await client.post(
        "/api/articles",
        json={
            "article": {
                "title": "t",
                "description": "d",
                "body": "b",
                "tagList": [f"t{i}" for i in range(11)],
            }
        },
        headers=auth(user["token"]),
    )
    assert too_many_tags.status_code == 422
    long_title = await client.post(
        "/api/articles",
        json={"article": {"title": "x" * 201, "description": "d", "body": "b"}},
        headers=auth(user["token"]),
    )
    assert long_title.status_code == 422
    assert (await client.post("/api/articles", json={"article": {}})).status_code == 401


async def test_update_changes_slug_and_old_slug_is_gone(client: AsyncClient) -> None:
    user = await register(client)
    article = await create_article(client, user["token"], tagList=["a"])
    response = await client.put(
        f"/api/articles/{article['slug']}",
        json={"article": {"title": "A brand new title", "body": "new body"}},
        headers=auth(user["token"]),
    )
    assert response.status_code == 200
    updated = response.json()["article"]
    assert updated["slug"].startswith("a-brand-new-title-")
    assert updated["body"] == "new body"
    assert updated["description"] == article["description"]
    assert updated["tagList"] == ["a"]
    assert updated["updatedAt"] >= article["updatedAt"]
    assert (await client.get(f"/api/articles/{article['slug']}")).status_code == 404
    assert (await client.get(f"/api/articles/{updated['slug']}")).status_code == 200


async def test_update_without_title_keeps_slug(client: AsyncClient) -> None:
    user = await register(client)
    article = await create_article(client, user["token"])
    response = await client.put(
        f"/api/articles/{article['slug']}",
        json={"article": {"description": "changed", "tagList": ["z", "y"]}},
        headers=auth(user["token"]),
    )
    assert response.status_code == 200
    assert response.json()["article"]["slug"] == article["slug"]
    assert response.json()["article"]["tagList"] == ["y", "z"]


async def test_only_the_author_may_update_or_delete(client: AsyncClient) -> None:
    author = await register(client)
    other = await register(client)
    article = await create_article(client, author["token"])
    slug = article["slug"]
    put = await client.put(
        f"/api/articles/{slug}", json={"article": {"title": "mine"}}, headers=auth(other["token"])
    )
    assert put.status_code == 403
    assert put.json()["code"] == "not_article_author"
    delete = await client.delete(f"/api/articles/{slug}", headers=auth(other["token"]))
    assert delete.status_code == 403
    assert (await client.delete(f"/api/articles/{slug}")).status_code == 401
    assert (await client.get(f"/api/articles/{slug}")).status_code == 200


async def test_delete_article(client: AsyncClient) -> None:
    author = await register(client)
    article = await create_article(client, author["token"], tagList=["gone"])
    response = await client.delete(
        f"/api/articles/{article['slug']}", headers=auth(author["token"])
    )
    assert response.status_code == 204
    assert response.content == b""
    assert (await client.get(f"/api/articles/{article['slug']}")).status_code == 404
    again = await client.delete(f"/api/articles/{article['slug']}", headers=auth(author["token"]))
    assert again.status_code == 404
    assert "gone" not in (await client.get("/api/tags")).json()["tags"]


async def test_unknown_slug_is_404(client: AsyncClient) -> None:
    user = await register(client)
    response = await client.get("/api/articles/no-such-article")
    assert response.status_code == 404
    assert response.json()["code"] == "article_not_found"
    for method in ("post", "delete"):
        r = await client.request(
            method, "/api/articles/no-such-article/favorite", headers=auth(user["token"])
        )
        assert r.status_code == 404
    put = await client.put(
        "/api/articles/no-such-article",
        json={"article": {"title": "x"}},
        headers=auth(user["token"]),
    )
    assert put.status_code == 404


async def test_favorite_and_unfavorite_are_idempotent(client: AsyncClient) -> None:
    author = await register(client)
    fan = await register(client)
    other = await register(client)
    slug = (await create_article(client, author["token"]))["slug"]
    for _ in range(2):
        response = await client.post(f"/api/articles/{slug}/favorite", headers=auth(fan["token"]))
        assert response.status_code == 200
        assert response.json()["article"]["favorited"] is True
        assert response.json()["article"]["favoritesCount"] == 1
    second = await client.post(f"/api/articles/{slug}/favorite", headers=auth(other["token"]))
    assert second.json()["article"]["favoritesCount"] == 2
    anonymous = (await client.get(f"/api/articles/{slug}")).json()["article"]
    assert anonymous["favorited"] is False
    assert anonymous["favoritesCount"] == 2
    for _ in range(2):
        response = await client.delete(f"/api/articles/{slug}/favorite", headers=auth(fan["token"]))
        assert response.status_code == 200
        assert response.json()["article"]["favorited"] is False
        assert response.json()["article"]["favoritesCount"] == 1
    assert (await client.post(f"/api/articles/{slug}/favorite")).status_code == 401


async def test_following_shown_on_article_author(client: AsyncClient) -> None:
    author = await register(client)
    reader = await register(client)
    slug = (await create_article(client, author["token"]))["slug"]
    await client.post(f"/api/profiles/{author['username']}/follow", headers=auth(reader["token"]))
    seen = (await client.get(f"/api/articles/{slug}", headers=auth(reader["token"]))).json()
    assert seen["article"]["author"]["following"] is True
