"""Rate limits in process, against the session's real Redis (and a Redis that is not running)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient, Response

from app.core.config import Settings
from app.core.tokens import create_access_token, signing_keys
from app.main import create_app
from app.services.articles import public_article_key
from app.services.tags import TAGS_KEY
from devstack.servers import free_port
from tests.api.conftest import LIMITS
from tests.conftest import TEST_SECRET


def client_for(app: FastAPI, ip: str = "203.0.113.7") -> AsyncClient:
    transport = ASGITransport(app=app, client=(ip, 40000), raise_app_exceptions=False)
    return AsyncClient(transport=transport, base_url="http://testserver")


def assert_limited(response: Response) -> None:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["code"] == "rate_limited"
    assert body["request_id"] == response.headers["x-request-id"]
    assert body["errors"]["body"]
    # A sliding window counter can make a client that filled a whole window wait longer than
    # one window (its hits then count, fading, against the next one), never two.
    assert 1 <= int(response.headers["retry-after"]) <= 120
    assert response.headers["ratelimit-remaining"] == "0"
    assert 0 <= int(response.headers["ratelimit-reset"]) <= 120


async def burst(
    http: AsyncClient, count: int, method: str = "GET", **kwargs: Any
) -> list[Response]:
    return [await http.request(method, "/api/tags", **kwargs) for _ in range(count)]


async def test_burst_gets_429_with_headers_and_other_clients_are_unaffected(
    limited_app: FastAPI,
) -> None:
    async with client_for(limited_app) as noisy, client_for(limited_app, "198.51.100.9") as quiet:
        allowed = await burst(noisy, 5)
        assert [r.status_code != 429 for r in allowed] == [True] * 5
        assert [r.headers["ratelimit-remaining"] for r in allowed] == ["4", "3", "2", "1", "0"]
        assert all(r.headers["ratelimit-limit"] == "5" for r in allowed)
        assert_limited(await noisy.get("/api/articles"))

        other = await quiet.get("/api/tags")
        assert other.status_code != 429
        assert other.headers["ratelimit-remaining"] == "4"


async def test_health_is_never_limited(limited_app: FastAPI) -> None:
    async with client_for(limited_app) as http:
        await burst(http, 6)
        for _ in range(10):
            response = await http.get("/health")
            assert response.status_code == 200
            assert "ratelimit-limit" not in response.headers
        assert (await http.get("/health/liveness")).status_code == 200


async def test_login_and_writes_have_stricter_limits(limited_app: FastAPI) -> None:
    async with client_for(limited_app) as http:
        for _ in range(2):
            response = await http.post("/api/users/login", json={})
            assert response.status_code != 429
            assert response.headers["ratelimit-limit"] == "2"
        assert_limited(await http.post("/api/users/login", json={}))
        # The login rule refused before the write and default rules counted that attempt.
        write = await http.post("/api/articles", json={})
        assert write.status_code != 429
        assert write.headers["ratelimit-limit"] == "4"
        read = await http.get("/api/tags")
        assert read.status_code != 429
        assert read.headers["ratelimit-remaining"] == "1"


async def test_authenticated_clients_are_keyed_by_user(limited_app: FastAPI) -> None:
    def auth(user_id: int, scheme: str = "Token") -> dict[str, str]:
        token = create_access_token(user_id, signing_keys(TEST_SECRET), 5)
        return {"Authorization": f"{scheme} {token}"}

    async with (
        client_for(limited_app, "192.0.2.1") as first,
        client_for(limited_app, "192.0.2.2") as second,
    ):
        await burst(first, 3, headers=auth(41))
        await burst(second, 2, headers=auth(41, "Bearer"))
        # Same user from another address: the same bucket, now empty.
        assert_limited(await second.get("/api/tags", headers=auth(41)))
        # Another user behind the first address, and the address itself, are unaffected.
        assert (await first.get("/api/tags", headers=auth(42))).status_code != 429
        anonymous = await first.get("/api/tags")
        assert anonymous.headers["ratelimit-remaining"] == "4"
        # A forged token does not buy a fresh bucket: it counts against the address.
        forged = {"Authorization": "Token not-a-jwt"}
        assert (await first.get("/api/tags", headers=forged)).headers["ratelimit-remaining"] == "3"


async def test_forwarded_for_counts_only_from_a_trusted_proxy(
    settings_factory: Callable[..., Settings],
) -> None:
    application = create_app(settings_factory(**LIMITS, TRUSTED_PROXIES="10.0.0.1"))
    async with LifespanManager(application):
        await application.state.resources.redis.client.flushdb()
        async with client_for(application, "203.0.113.50") as direct:
            for n in range(5):
                await direct.get("/api/tags", headers={"X-Forwarded-For": f"192.0.2.{n}"})
            spoofed = await direct.get("/api/tags", headers={"X-Forwarded-For": "192.0.2.99"})
            assert_limited(spoofed)
        async with client_for(application, "10.0.0.1") as proxy:
            for n in range(3):
                response = await proxy.get("/api/tags", headers={"X-Forwarded-For": f"192.0.2.{n}"})
                assert response.headers["ratelimit-remaining"] == "4"


async def test_redis_down_at_startup_falls_back_to_memory(
    settings_factory: Callable[..., Settings],
) -> None:
    # Nothing listens on this port: Redis is down before the app starts.
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    application = create_app(settings_factory(**LIMITS, REDIS_URL=dead_redis))
    async with LifespanManager(application), client_for(application) as http:
        responses = await burst(http, 5)
        assert all(r.status_code != 429 for r in responses)
        assert_limited(await http.get("/api/tags"))
        detailed = (await http.get("/health/detailed")).json()
        assert detailed["status"] == "degraded"
        assert detailed["rate_limiter"] == {"enabled": True, "backend": "memory"}
        assert detailed["circuit_breakers"]["redis"] in ("open", "half-open")


async def test_cached_tags_come_back_with_the_count_in_one_round_trip(
    limited_app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    resources = limited_app.state.resources
    redis = resources.redis
    calls = 0
    run, execute, evalsha = redis.run, redis.execute, redis.evalsha

    async def counting_run(command: Any) -> Any:
        nonlocal calls
        calls += 1
        return await run(command)

    async def counting_execute(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        return await execute(*args)

    async def counting_evalsha(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        return await evalsha(*args)

    monkeypatch.setattr(redis, "run", counting_run)
    monkeypatch.setattr(redis, "execute", counting_execute)
    monkeypatch.setattr(redis, "evalsha", counting_evalsha)
    await redis.client.set(TAGS_KEY, orjson.dumps({"tags": ["planted"]}), ex=30)
    async with client_for(limited_app) as http:
        first = await http.get("/api/tags")
        assert first.json()["tags"] == ["planted"]
        assert first.headers["ratelimit-remaining"] == "4"
        assert calls == 1  # the limiter's script, which also read the cached list
        # An invalidation (a write) is seen by the very next read.
        await redis.client.set(TAGS_KEY, orjson.dumps({"tags": ["changed"]}), ex=30)
        assert (await http.get("/api/tags")).json()["tags"] == ["changed"]
        await redis.client.delete(TAGS_KEY)
        third = await http.get("/api/tags")
        assert third.status_code == 200
        assert "changed" not in third.json()["tags"]
        assert await redis.client.get(TAGS_KEY) == third.content
        assert calls == 4  # a miss also stores the list it loaded


async def test_a_cached_article_comes_back_with_the_count_in_one_round_trip(
    limited_app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis = limited_app.state.resources.redis
    slug = "a-cached-article-0123abcd"
    author = {"username": "planter", "bio": None, "image": None, "following": False}
    article = {"slug": slug, "title": "planted", "favorited": False, "author": author}
    body = orjson.dumps({"article": article})
    await redis.client.set(public_article_key(slug), body, ex=30)
    calls: list[str] = []
    run, execute, evalsha = redis.run, redis.execute, redis.evalsha

    async def counting_run(command: Any) -> Any:
        calls.append("run")
        return await run(command)

    async def counting_execute(*args: Any) -> Any:
        calls.append("execute")
        return await execute(*args)

    async def counting_evalsha(*args: Any) -> Any:
        calls.append("evalsha")
        return await evalsha(*args)

    monkeypatch.setattr(redis, "run", counting_run)
    monkeypatch.setattr(redis, "execute", counting_execute)
    monkeypatch.setattr(redis, "evalsha", counting_evalsha)
    async with client_for(limited_app) as http:
        response = await http.get(f"/api/articles/{slug}")
        assert response.status_code == 200
        assert response.content == body
        assert response.headers["ratelimit-remaining"] == "4"
        assert calls == ["evalsha"]  # the limiter's script, which also read the cached body
        # A signed-in reader gets the same body with their own flags, from their favourites
        # and follows: read from Postgres and stored the first time (no account 7 there: none),
        # then read along with the count, the body and the generations.
        token = create_access_token(7, signing_keys(TEST_SECRET), 5)
        headers = {"Authorization": f"Token {token}"}
        calls.clear()
        first = await http.get(f"/api/articles/{slug}", headers=headers)
        assert first.status_code == 200
        assert first.content == body
        assert calls[0] == "evalsha"
        assert len(calls) > 1  # the generations started, the set stored
        calls.clear()
        again = await http.get(f"/api/articles/{slug}", headers=headers)
        assert again.content == body
        assert calls == ["evalsha"]
