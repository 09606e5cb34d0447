"""Redis with ACL users (the default user switched off): the app authenticates with the user and
password in REDIS_URL. A wrong password makes Redis count as down, with a log line saying it is
an authentication failure; a user whose ACL lacks the app's key prefix (NOPERM) is no 5xx either.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from app.core.config import Settings
from app.services.articles import public_article_key
from devstack.servers import RedisServer, free_port
from tests.support.apps import serve
from tests.support.content import publish, register

pytestmark = pytest.mark.slow

SettingsFactory = Callable[..., Settings]

PASSWORD = "conduit-acl-password-0123"


@pytest.fixture(scope="module")
def acl_redis(workdir: Path) -> Iterator[RedisServer]:
    port = free_port()
    server = RedisServer(
        port,
        workdir / f"redis-acl-{port}",
        extra_args=[
            "--user", "default", "off",
            "--user", "conduit", "on", f">{PASSWORD}", "~conduit:*", "+@all",
            "--user", "narrow", "on", f">{PASSWORD}", "~elsewhere:*", "+@all",
        ],
    )  # fmt: skip
    server.start()
    yield server
    server.stop()


def url(server: RedisServer, user: str, password: str) -> str:
    return f"redis://{user}:{password}@127.0.0.1:{server.port}/0"


LIMITS: dict[str, object] = {
    "RATE_LIMIT_ENABLED": True,
    "RATE_LIMIT_LOGIN": "2/minute",
    "BREAKER_FAILURE_THRESHOLD": 2,
}


async def test_acl_user_from_the_url(
    settings_factory: SettingsFactory, acl_redis: RedisServer
) -> None:
    admin = aioredis.Redis.from_url(url(acl_redis, "conduit", PASSWORD))
    unauthenticated = aioredis.Redis(port=acl_redis.port, retry=Retry(NoBackoff(), 0))
    with pytest.raises(aioredis.AuthenticationError):  # the default user is off
        await unauthenticated.get("conduit:v1:anything")
    await unauthenticated.aclose()

    settings = settings_factory(REDIS_URL=url(acl_redis, "conduit", PASSWORD), **LIMITS)
    async with serve(settings) as http:
        slug = await publish(http, await register(http))
        assert (await http.get(f"/api/articles/{slug}")).status_code == 200
        logins = [(await http.post("/api/users/login", json={})).status_code for _ in range(3)]
        detailed = (await http.get("/health/detailed")).json()

    assert logins == [422, 422, 429]
    assert await admin.exists(public_article_key(slug)) == 1
    assert await admin.keys("conduit:v1:ratelimit*")
    await admin.aclose()
    assert detailed["checks"]["redis"]["status"] == "ok"
    assert detailed["rate_limiter"]["backend"] == "redis"


async def test_wrong_password_is_redis_down_and_says_so(
    settings_factory: SettingsFactory,
    acl_redis: RedisServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = settings_factory(REDIS_URL=url(acl_redis, "conduit", "wrong-password"), **LIMITS)
    async with serve(settings) as http:
        slug = await publish(http, await register(http))
        reads = [(await http.get(f"/api/articles/{slug}")).status_code for _ in range(3)]
        logins = [(await http.post("/api/users/login", json={})).status_code for _ in range(3)]
        detailed = (await http.get("/health/detailed")).json()

    assert reads == [200, 200, 200]
    assert logins == [422, 422, 429]  # counted in process
    redis_check = detailed["checks"]["redis"]
    assert redis_check["status"] == "down"
    assert "AuthenticationError" in redis_check["last_error"], redis_check
    assert "wrong-password" not in json.dumps(detailed)
    assert detailed["rate_limiter"]["backend"] == "memory"
    output = capsys.readouterr().out
    failures = [
        json.loads(line) for line in output.splitlines() if "redis_connection_failed" in line
    ]
    assert failures, "the refused AUTH was not logged"
    assert failures[0]["reason"] == "authentication"
    assert "wrong-password" not in output  # the password never reaches a log line


async def test_acl_without_the_key_prefix_is_no_server_error(
    settings_factory: SettingsFactory,
    acl_redis: RedisServer,
) -> None:
    settings = settings_factory(REDIS_URL=url(acl_redis, "narrow", PASSWORD), **LIMITS)
    async with serve(settings) as http:
        slug = await publish(http, await register(http))
        reads = [(await http.get(f"/api/articles/{slug}")).status_code for _ in range(3)]
        logins = [(await http.post("/api/users/login", json={})).status_code for _ in range(3)]
        detailed = (await http.get("/health/detailed")).json()

    assert reads == [200, 200, 200]
    assert logins == [422, 422, 429]
    assert detailed["rate_limiter"]["backend"] == "memory"
