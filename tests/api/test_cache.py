"""Cache-aside reads for tags and profiles: served from Redis, invalidated by writes, and
served from Postgres when Redis is not configured."""

from __future__ import annotations

import orjson
from fastapi import FastAPI
from httpx import AsyncClient

from app.db.cache import cache_key
from app.services.tags import TAGS_KEY
from tests.api.helpers import auth, create_article, register
from tests.support.apps import serve


async def test_tags_are_cached_in_redis(app: FastAPI, client: AsyncClient) -> None:
    redis = app.state.resources.redis.client
    user = await register(client)
    await create_article(client, user["token"], tagList=["cached"])
    assert await redis.get(TAGS_KEY) is None  # the write dropped any cached list
    response = await client.get("/api/tags")
    assert response.json() == {"tags": ["cached"]}
    assert response.headers["content-type"] == "application/json"
    # What is cached is the body as sent, byte for byte: a hit hands it on untouched.
    assert await redis.get(TAGS_KEY) == response.content
    assert 0 < await redis.ttl(TAGS_KEY) <= app.state.resources.settings.CACHE_TTL_SECONDS


async def test_cached_value_is_what_is_served(app: FastAPI, client: AsyncClient) -> None:
    """Proves reads come from the cache: a value planted in Redis is what the API returns."""
    redis = app.state.resources.redis.client
    await redis.set(TAGS_KEY, orjson.dumps({"tags": ["from-redis"]}), ex=30)
    assert (await client.get("/api/tags")).json()["tags"] == ["from-redis"]


async def test_profile_cache_invalidated_on_update(app: FastAPI, client: AsyncClient) -> None:
    redis = app.state.resources.redis.client
    user = await register(client, "cachey")
    await client.get("/api/profiles/cachey")
    assert await redis.get(cache_key("profile", "cachey")) is not None
    await client.put("/api/user", json={"user": {"bio": "fresh"}}, headers=auth(user["token"]))
    assert await redis.get(cache_key("profile", "cachey")) is None
    assert (await client.get("/api/profiles/cachey")).json()["profile"]["bio"] == "fresh"


async def test_without_redis_reads_come_from_postgres(settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with serve(settings_factory(REDIS_URL=None)) as http:
        health = (await http.get("/health/detailed")).json()
        assert health["checks"]["redis"]["status"] == "disabled"
        tags = await http.get("/api/tags")
        assert tags.status_code == 200
        assert isinstance(tags.json()["tags"], list)
        missing = await http.get("/api/profiles/definitely-not-a-user")
        assert missing.status_code == 404
