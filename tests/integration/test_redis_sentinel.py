"""A real Sentinel failover under load: one primary, one replica, three Sentinels (all
`redis-server`), a live app told only where the Sentinels are. The primary is killed with
SIGKILL while clients read a cached article, the tags and hit the login limit. Throughout: no
5xx. The limiter falls back to memory, then returns to Redis on the promoted replica (new keys
appear there); the cache resumes there. The failover window (kill -> first command the new
primary serves) is measured and printed."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from app.core.config import Settings
from app.services.articles import public_article_key
from devstack.redis_sentinel import SentinelCluster, SentinelProcess, sentinel_binary_available
from devstack.servers import PostgresServer, RedisServer, free_port
from tests.support.apps import serve
from tests.support.content import publish, register
from tests.support.databases import fresh_database
from tests.support.live import LiveServer

pytestmark = pytest.mark.slow

RATE_LIMIT_KEYS = "conduit:v1:ratelimit*"


@pytest.fixture
def sentinel_cluster(workdir: Path) -> Iterator[SentinelCluster]:
    reason = sentinel_binary_available()
    if reason:
        pytest.skip(reason)
    cluster = SentinelCluster(workdir / f"sentinel-{free_port()}", down_after_ms=1000)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


async def _swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A Sentinel that accepts the connection and never answers (a black-holed host)."""
    await reader.read()
    writer.close()


class Load:
    """Concurrent clients until stopped; every (path, status) is kept."""

    def __init__(self, http: httpx.AsyncClient, slug: str) -> None:
        self.http = http
        self.slug = slug
        self.statuses: list[tuple[str, int]] = []
        self.running = True

    async def _loop(self, method: str, path: str, body: Any = None) -> None:
        while self.running:
            response = await self.http.request(method, path, json=body)
            self.statuses.append((f"{method} {path}", response.status_code))
            await asyncio.sleep(0.01)

    async def run(self) -> None:
        article = f"/api/articles/{self.slug}"
        await asyncio.gather(
            self._loop("GET", article),
            self._loop("GET", article),
            self._loop("GET", "/api/tags"),
            self._loop("POST", "/api/users/login", {}),
        )


async def served_commands(node: aioredis.Redis) -> int:
    """EVALSHA and GET calls: what the app sends a primary, never what replication replays."""
    stats = await node.info("commandstats")
    return sum(
        int(stats.get(name, {}).get(field, 0))
        for name in ("cmdstat_evalsha", "cmdstat_get")
        for field in ("calls", "rejected_calls", "failed_calls")
    )


async def watch_failover(
    cluster: SentinelCluster, candidate: int, killed_at: float, within: float
) -> dict[str, float]:
    """Seconds from the kill until a Sentinel first names `candidate` as the primary, and until
    it serves the app."""
    node = aioredis.Redis(port=candidate, socket_timeout=1)
    sentinels = [aioredis.Redis(port=s.port, socket_timeout=1) for s in cluster.sentinels]
    baseline = await served_commands(node)
    marks: dict[str, float] = {}
    try:
        while "served" not in marks:
            now = time.monotonic()
            assert now - killed_at < within, f"no failover within {within}s: {marks}"
            if "promoted" not in marks:
                for sentinel in sentinels:
                    name = cluster.master_name
                    address = await sentinel.sentinel_get_master_addr_by_name(name)
                    if address and int(address[1]) == candidate:  # type: ignore[index]
                        marks["promoted"] = now - killed_at
                        break
            if await served_commands(node) > baseline:
                marks["served"] = now - killed_at
            await asyncio.sleep(0.01)
    finally:
        for client in [node, *sentinels]:
            await client.aclose()
    # A Sentinel can tell the app before the next poll sees it: never later than serving.
    marks.setdefault("promoted", marks["served"])
    return marks


async def test_api_follows_a_sentinel_failover_under_load(
    base_env: dict[str, str], postgres: PostgresServer, sentinel_cluster: SentinelCluster
) -> None:
    cluster = sentinel_cluster
    old_port = cluster.primary_port()
    replica_port = next(node.port for node in cluster.nodes if node.port != old_port)
    silent = await asyncio.start_server(_swallow, "127.0.0.1", 0)
    silent_port = silent.sockets[0].getsockname()[1]
    env = {
        **base_env,
        "DATABASE_URL": fresh_database(postgres),
        # The host is never used: the Sentinels say where the primary is. The db number is.
        "REDIS_URL": "redis://not-used.invalid:6379/0",
        # Listed first, a Sentinel that never answers: the others must be asked in its stead.
        "REDIS_SENTINELS": f"127.0.0.1:{silent_port},{cluster.sentinel_addresses}",
        "REDIS_SENTINEL_MASTER": cluster.master_name,
        "BREAKER_RESET_SECONDS": "0.5",
        "RATE_LIMIT_ENABLED": "true",
        "RATE_LIMIT_DEFAULT": "100000/minute",
        "RATE_LIMIT_WRITE": "100000/minute",
        "RATE_LIMIT_REGISTER": "1000/minute",
        "RATE_LIMIT_LOGIN": "5/minute",
    }
    replica = aioredis.Redis(port=replica_port, socket_timeout=2)
    with LiveServer(env) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            slug = await publish(http, await register(http))
            assert (await http.get(f"/api/articles/{slug}")).status_code == 200  # cached now
            before = (await http.get("/health/detailed")).json()
            assert before["checks"]["redis"]["topology"] == "sentinel"
            assert before["checks"]["redis"]["primary"] == f"127.0.0.1:{old_port}"
            assert before["rate_limiter"]["backend"] == "redis"
            keys_before = set(await replica.keys(RATE_LIMIT_KEYS))  # replicated so far

            load = Load(http, slug)
            task = asyncio.create_task(load.run())
            await asyncio.sleep(1.0)
            served_before_kill = len(load.statuses)
            killed_at = time.monotonic()
            cluster.node(old_port).kill()
            marks = await watch_failover(cluster, replica_port, killed_at, within=20)
            await asyncio.sleep(1.5)  # load on the new primary for a while
            load.running = False
            await task

            # New writes land on the new primary: a limiter key for a new client, a cache entry
            # for a new article.
            token = await register(http)
            new_slug = await publish(http, token)
            assert (await http.get(f"/api/articles/{new_slug}")).status_code == 200
            assert await replica.exists(public_article_key(new_slug)) == 1
            keys_after = set(await replica.keys(RATE_LIMIT_KEYS))
            assert keys_after - keys_before, "no rate-limit key written on the new primary"
            after = (await http.get("/health/detailed")).json()
            role = await replica.execute_command("ROLE")  # type: ignore[no-untyped-call]
    await replica.aclose()
    silent.close()

    print(
        f"\nSentinel failover window: {marks['served']:.2f} s from SIGKILL to the first command "
        f"served by the new primary (Sentinels named it after {marks['promoted']:.2f} s; "
        f"down-after-milliseconds={cluster.down_after_ms}, BREAKER_RESET_SECONDS=0.5)"
    )
    assert role[0] == b"master"
    assert after["checks"]["redis"]["status"] == "ok"
    assert after["checks"]["redis"]["primary"] == f"127.0.0.1:{replica_port}"
    assert after["rate_limiter"]["backend"] == "redis"

    statuses = [status for _, status in load.statuses]
    assert [s for s in statuses if s >= 500] == []
    assert set(statuses) <= {200, 422, 429}, set(statuses)
    assert len(statuses) > served_before_kill + 50  # it kept serving through the failover

    lines = [json.loads(line) for line in server.lines if line.startswith("{")]
    events = [(line.get("event"), line) for line in lines]
    names = [name for name, _ in events]
    fell_back = names.index("rate_limiter_fell_back_to_memory")
    assert "rate_limiter_returned_to_redis" in names[fell_back:]
    located = [line for name, line in events if name == "redis_primary_located"]
    assert located[-1]["address"] == f"127.0.0.1:{replica_port}"
    assert located[-1]["previous"] == f"127.0.0.1:{old_port}"


SENTINEL_PASSWORD = "sentinel-password-0123"
WRONG_PASSWORD = "not-the-sentinel-password-9"


@pytest.fixture
def guarded_sentinel(workdir: Path) -> Iterator[tuple[RedisServer, SentinelProcess]]:
    """One primary and one Sentinel that requires a password (`requirepass` in its config)."""
    reason = sentinel_binary_available()
    if reason:
        pytest.skip(reason)
    base = workdir / f"sentinel-auth-{free_port()}"
    primary = RedisServer(free_port(), base / "node")
    sentinel = SentinelProcess(free_port(), base / "sentinel", primary.binary)
    primary.start()
    try:
        sentinel.start(
            f"port {sentinel.port}\nbind 127.0.0.1\ndir {sentinel.workdir}\n"
            f"requirepass {SENTINEL_PASSWORD}\n"
            f"sentinel monitor guarded 127.0.0.1 {primary.port} 1\n"
        )
        yield primary, sentinel
    finally:
        sentinel.stop()
        primary.stop()


@pytest.mark.parametrize(
    ("password", "status"), [(SENTINEL_PASSWORD, "ok"), (WRONG_PASSWORD, "down")]
)
async def test_sentinel_password(
    settings_factory: Callable[..., Settings],
    guarded_sentinel: tuple[RedisServer, SentinelProcess],
    password: str,
    status: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    primary, sentinel = guarded_sentinel
    settings = settings_factory(
        REDIS_URL="redis://not-used.invalid/0",
        REDIS_SENTINELS=f"127.0.0.1:{sentinel.port}",
        REDIS_SENTINEL_MASTER="guarded",
        REDIS_SENTINEL_PASSWORD=password,
    )
    async with serve(settings) as http:
        assert (await http.get("/api/tags")).status_code == 200
        redis_check = (await http.get("/health/detailed")).json()["checks"]["redis"]
    assert redis_check["status"] == status, redis_check
    if status == "ok":
        assert redis_check["primary"] == f"127.0.0.1:{primary.port}"
        return
    output = capsys.readouterr().out
    failures = [
        json.loads(line) for line in output.splitlines() if "redis_connection_failed" in line
    ]
    assert failures, "the Sentinel's refusal was not logged"
    assert (failures[0]["address"], failures[0]["reason"]) == ("the Sentinels", "authentication")
    assert len(failures[0]["error"]) < 300, failures[0]["error"]  # no client reprs
    assert WRONG_PASSWORD not in output  # the password stays out of the logs
