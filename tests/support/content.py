"""Users and articles made through the public API, for tests that need something to read."""

from __future__ import annotations

import uuid

import httpx


async def register(http: httpx.AsyncClient) -> str:
    """A new user; their token."""
    name = f"u{uuid.uuid4().hex[:10]}"
    user = {"username": name, "email": f"{name}@example.com", "password": "x" * 12}
    response = await http.post("/api/users", json={"user": user})
    assert response.status_code == 201, response.text
    token: str = response.json()["user"]["token"]
    return token


async def publish(http: httpx.AsyncClient, token: str) -> str:
    """A new article by the token's user; its slug."""
    article = {"title": f"Article {uuid.uuid4().hex[:8]}", "description": "d", "body": "b"}
    response = await http.post(
        "/api/articles", json={"article": article}, headers={"Authorization": f"Token {token}"}
    )
    assert response.status_code == 201, response.text
    slug: str = response.json()["article"]["slug"]
    return slug
