"""Redis (its own server, not the session's) stopped while a live API is under requests: every
response stays a success, detailed health says degraded, the limiter falls back to memory and
still refuses, the breaker opens; Redis back: the breaker closes and the limiter returns."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.servers import PostgresServer, RedisServer, free_port
from tests.support.databases import fresh_database
from tests.support.live import LiveServer

pytestmark = pytest.mark.slow


@pytest.fixture
def own_redis(workdir: Path) -> Iterator[RedisServer]:
    port = free_port()
    server = RedisServer(port, workdir / f"redis-outage-{port}")
    server.start()
    yield server
    server.stop()


class Load:
    """Clients reading the API in a loop until stopped; every status is kept."""

    def __init__(
        self, http: httpx.AsyncClient, paths: list[str], headers: dict[str, str] | None = None
    ) -> None:
        self.http = http
        self.paths = paths
        self.headers = headers or {}
        self.statuses: list[tuple[str, int]] = []
        self.running = True

    async def run(self) -> None:
        while self.running:
            for path in self.paths:
                response = await self.http.get(path, headers=self.headers)
                self.statuses.append((path, response.status_code))
            await asyncio.sleep(0.02)


async def detailed(http: httpx.AsyncClient) -> dict[str, Any]:
    body: dict[str, Any] = (await http.get("/health/detailed")).json()
    return body


async def eventually(http: httpx.AsyncClient, check: Any, within: float) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        body = await detailed(http)
        if check(body):
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.2)


async def test_api_keeps_serving_through_a_redis_outage(
    base_env: dict[str, str], postgres: PostgresServer, own_redis: RedisServer
) -> None:
    env = {
        **base_env,
        "DATABASE_URL": fresh_database(postgres),
        "REDIS_URL": own_redis.url,
        "BREAKER_RESET_SECONDS": "1",
        "RATE_LIMIT_ENABLED": "true",
        "RATE_LIMIT_DEFAULT": "10000/minute",
        "RATE_LIMIT_WRITE": "10000/minute",
        "RATE_LIMIT_LOGIN": "3/minute",
    }
    with LiveServer(env) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            name = f"cached{uuid.uuid4().hex[:8]}"
            user = {"username": name, "email": f"{name}@example.com", "password": "x" * 12}
            created = await http.post("/api/users", json={"user": user})
            assert created.status_code == 201
            signed_in = {"Authorization": f"Token {created.json()['user']['token']}"}
            article = {"title": "Read through the outage", "description": "d", "body": "b"}
            posted = await http.post("/api/articles", json={"article": article}, headers=signed_in)
            slug = posted.json()["article"]["slug"]
            load = Load(http, ["/api/tags", "/api/articles", f"/api/profiles/{name}"])
            # Signed-in reads start from the cache and the reader's cached favourites, which
            # are gone with Redis: they fall back to Postgres.
            reader_paths = ["/api/articles", f"/api/articles/{slug}", "/api/articles/feed"]
            reader = Load(http, reader_paths, headers=signed_in)
            task = asyncio.gather(load.run(), reader.run())
            await asyncio.sleep(1)
            before = await detailed(http)
            assert before["status"] == "ok"
            assert before["rate_limiter"]["backend"] == "redis"

            own_redis.stop()
            down = await eventually(
                http, lambda b: b["circuit_breakers"]["redis"] != "closed", within=5
            )
            await asyncio.sleep(2)  # keep the load on while Redis is gone
            down = await detailed(http)
            assert down["status"] == "degraded"
            assert down["checks"]["redis"]["status"] == "down"
            assert down["checks"]["database"]["status"] == "ok"
            assert down["rate_limiter"]["backend"] == "memory"
            # The in-process limiter still refuses a burst.
            logins = [(await http.post("/api/users/login", json={})).status_code for _ in range(4)]
            assert logins == [422, 422, 422, 429]
            # The reader's own favourite shows at once with Redis down.
            favourite = await http.post(f"/api/articles/{slug}/favorite", headers=signed_in)
            assert favourite.status_code == 200
            mine = await http.get(f"/api/articles/{slug}", headers=signed_in)
            assert mine.json()["article"]["favorited"] is True

            own_redis.start()
            back = await eventually(
                http,
                lambda b: (
                    b["circuit_breakers"]["redis"] == "closed"
                    and b["rate_limiter"]["backend"] == "redis"
                    and b["status"] == "ok"
                ),
                within=10,
            )
            assert back["checks"]["redis"]["status"] == "ok"
            load.running = reader.running = False
            await task

    failures = [(p, status) for p, status in load.statuses + reader.statuses if status != 200]
    assert failures == []
    assert len(load.statuses) > 50
    assert len(reader.statuses) > 50
    events = [json.loads(line).get("event") for line in server.lines if line.startswith("{")]
    assert 1 <= events.count("rate_limiter_fell_back_to_memory") <= 3
    assert events.count("rate_limiter_returned_to_redis") >= 1
    assert "circuit_breaker_state_changed" in events
