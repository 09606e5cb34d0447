"""Rate limits across two real uvicorn processes sharing one Redis.

uvicorn itself rewrites the client address from X-Forwarded-For when the peer is in its
--forwarded-allow-ips (127.0.0.1 by default); the servers here run with an allow-list that
excludes the test client, so the app's own TRUSTED_PROXIES decides, as in production.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import redis

from app.core.tokens import create_access_token, signing_keys
from devstack.servers import RedisServer
from tests.conftest import TEST_SECRET
from tests.support.live import LiveServer

pytestmark = pytest.mark.slow

PROXY = "10.255.0.1"  # the only trusted proxy; the test client (127.0.0.1) is not it


@pytest.fixture
def two_servers(
    base_env: dict[str, str], redis_server: RedisServer
) -> Iterator[tuple[LiveServer, LiveServer]]:
    redis.Redis.from_url(redis_server.url).flushdb()
    env = {
        **base_env,
        "RATE_LIMIT_ENABLED": "true",
        "RATE_LIMIT_DEFAULT": "6/minute",
        "TRUSTED_PROXIES": PROXY,
    }
    args = ["--forwarded-allow-ips", PROXY]
    with LiveServer(env, extra_args=args) as first, LiveServer(env, extra_args=args) as second:
        yield first, second


def test_two_processes_share_one_limit_and_spoofed_forwarded_for_is_ignored(
    two_servers: tuple[LiveServer, LiveServer],
) -> None:
    first, second = two_servers
    remaining = []
    for n in range(6):
        server = two_servers[n % 2]
        # A new "client address" every time: it must not buy a new bucket.
        spoofed = {"X-Forwarded-For": f"198.51.100.{n}"}
        response = httpx.get(server.url + "/api/tags", headers=spoofed)
        assert response.status_code == 200, response.text
        remaining.append(response.headers["ratelimit-remaining"])
    assert remaining == ["5", "4", "3", "2", "1", "0"]

    for server in (first, second):
        refused = httpx.get(server.url + "/api/tags", headers={"X-Forwarded-For": "192.0.2.1"})
        assert refused.status_code == 429
        assert refused.json()["code"] == "rate_limited"
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["ratelimit-limit"] == "6"

    # Another client (a signed-in user, keyed by id) is unaffected on either process.
    token = create_access_token(424242, signing_keys(TEST_SECRET), 5)
    for server in (first, second):
        other = httpx.get(server.url + "/api/tags", headers={"Authorization": f"Token {token}"})
        assert other.status_code == 200
    assert other.headers["ratelimit-remaining"] == "4"
    # Health probes are never limited.
    assert httpx.get(first.url + "/health/readiness").status_code == 200
