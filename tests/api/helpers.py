"""Small client-side helpers: what a RealWorld frontend does, step by step."""

from __future__ import annotations

import itertools
from typing import Any

from httpx import AsyncClient, Response

_counter = itertools.count(1)
PASSWORD = "correct-horse-battery"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Token {token}"}


async def register(client: AsyncClient, name: str | None = None, **fields: Any) -> dict[str, Any]:
    username = name or f"user{next(_counter)}"
    payload = {"username": username, "email": f"{username}@example.com", "password": PASSWORD}
    payload.update(fields)
    response = await client.post("/api/users", json={"user": payload})
    assert response.status_code == 201, response.text
    user: dict[str, Any] = response.json()["user"]
    return user


async def create_article(
    client: AsyncClient, token: str, title: str = "How to train your dragon", **fields: Any
) -> dict[str, Any]:
    payload = {"title": title, "description": "Ever wonder how?", "body": "You have to believe"}
    payload.update(fields)
    response = await client.post("/api/articles", json={"article": payload}, headers=auth(token))
    assert response.status_code == 201, response.text
    article: dict[str, Any] = response.json()["article"]
    return article


def error_messages(response: Response) -> list[str]:
    body = response.json()
    assert set(body) >= {"errors", "code", "request_id"}, body
    messages: list[str] = body["errors"]["body"]
    return messages
