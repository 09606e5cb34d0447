"""Comments: add, list newest first, delete by author only."""

from __future__ import annotations

import re

from httpx import AsyncClient

from tests.api.helpers import auth, create_article, error_messages, register


async def _comment(client: AsyncClient, slug: str, token: str, body: str) -> dict[str, object]:
    response = await client.post(
        f"/api/articles/{slug}/comments", json={"comment": {"body": body}}, headers=auth(token)
    )
    assert response.status_code == 200, response.text
    comment: dict[str, object] = response.json()["comment"]
    return comment


async def test_add_and_list_comments(client: AsyncClient) -> None:
    author = await register(client)
    reader = await register(client)
    slug = (await create_article(client, author["token"]))["slug"]
    first = await _comment(client, slug, reader["token"], "first!")
    second = await _comment(client, slug, author["token"], "thanks")
    assert isinstance(first["id"], int)
    assert first["author"] == {
        "username": reader["username"],
        "bio": None,
        "image": None,
        "following": False,
    }
    assert re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$", str(first["createdAt"]))
    listed = await client.get(f"/api/articles/{slug}/comments")
    assert listed.status_code == 200
    comments = listed.json()["comments"]
    assert [c["id"] for c in comments] == [second["id"], first["id"]]
    await client.post(f"/api/profiles/{reader['username']}/follow", headers=auth(author["token"]))
    personal = await client.get(f"/api/articles/{slug}/comments", headers=auth(author["token"]))
    by_reader = next(c for c in personal.json()["comments"] if c["id"] == first["id"])
    assert by_reader["author"]["following"] is True


async def test_comment_errors(client: AsyncClient) -> None:
    user = await register(client)
    slug = (await create_article(client, user["token"]))["slug"]
    unauth = await client.post(f"/api/articles/{slug}/comments", json={"comment": {"body": "x"}})
    assert unauth.status_code == 401
    blank = await client.post(
        f"/api/articles/{slug}/comments",
        json={"comment": {"body": "   "}},
        headers=auth(user["token"]),
    )
    assert blank.status_code == 422
    assert error_messages(blank) == ["body can't be blank"]
    missing = await client.post(
        "/api/articles/nope/comments", json={"comment": {"body": "x"}}, headers=auth(user["token"])
    )
    assert missing.status_code == 404
    assert (await client.get("/api/articles/nope/comments")).status_code == 404


async def test_delete_comment_rules(client: AsyncClient) -> None:
    author = await register(client)
    other = await register(client)
    slug = (await create_article(client, author["token"]))["slug"]
    other_slug = (await create_article(client, author["token"], title="Another"))["slug"]
    comment = await _comment(client, slug, author["token"], "mine")
    url = f"/api/articles/{slug}/comments/{comment['id']}"
    assert (await client.delete(url)).status_code == 401
    forbidden = await client.delete(url, headers=auth(other["token"]))
    assert forbidden.status_code == 403
    assert forbidden.json()["code"] == "not_comment_author"
    wrong_article = await client.delete(
        f"/api/articles/{other_slug}/comments/{comment['id']}", headers=auth(author["token"])
    )
    assert wrong_article.status_code == 404
    deleted = await client.delete(url, headers=auth(author["token"]))
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert (await client.delete(url, headers=auth(author["token"]))).status_code == 404
    assert (await client.get(f"/api/articles/{slug}/comments")).json() == {"comments": []}
    huge_id = await client.delete(
        f"/api/articles/{slug}/comments/99999999999999999999999", headers=auth(author["token"])
    )
    assert huge_id.status_code == 422


async def test_comments_vanish_with_their_article(client: AsyncClient) -> None:
    author = await register(client)
    slug = (await create_article(client, author["token"]))["slug"]
    await _comment(client, slug, author["token"], "bye")
    await client.delete(f"/api/articles/{slug}", headers=auth(author["token"]))
    assert (await client.get(f"/api/articles/{slug}/comments")).status_code == 404
