"""How the pipelined connection follows a primary that moves, against real redis-servers (the
Sentinels are stood in for by `locate`, which a failover test replaces with real ones):
- a server that is not the primary is refused at connect (ROLE), before any command is sent;
- a primary demoted under an open connection (READONLY) drops that connection with a
  ConnectionError, and the next command asks `locate` again and lands on the new primary.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis import exceptions as redis_exc

from app.db.redis_pipeline import PipelinedRedis
from devstack.servers import RedisServer, free_port


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    servers = (RedisServer(free_port(), tmp_path / "a"), RedisServer(free_port(), tmp_path / "b"))
    for server in servers:
        server.start()
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
async def admin(
    pair: tuple[RedisServer, RedisServer],
) -> AsyncIterator[tuple[aioredis.Redis, aioredis.Redis]]:
    clients = (aioredis.Redis(port=pair[0].port), aioredis.Redis(port=pair[1].port))
    yield clients
    for client in clients:
        await client.aclose()


class Locator:
    """Where the primary is, as a Sentinel would answer; the test moves it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.asked = 0

    async def __call__(self) -> tuple[str, int]:
        self.asked += 1
        return "127.0.0.1", self.port


async def test_a_replica_is_refused_at_connect(
    pair: tuple[RedisServer, RedisServer], admin: tuple[aioredis.Redis, aioredis.Redis]
) -> None:
    primary, replica = pair
    await admin[1].replicaof("127.0.0.1", primary.port)
    locate = Locator(replica.port)  # a stale answer: still names the replica
    client = PipelinedRedis(primary.url, timeout=2.0, locate=locate)
    with pytest.raises(redis_exc.ConnectionError, match="not the primary"):
        await client.execute("SET", "conduit:k", "v")
    locate.port = primary.port
    assert await client.execute("SET", "conduit:k", "v") == b"OK"
    assert locate.asked == 2
    await client.close()


async def test_a_demoted_primary_is_left_for_the_new_one(
    pair: tuple[RedisServer, RedisServer], admin: tuple[aioredis.Redis, aioredis.Redis]
) -> None:
    old, new = pair
    locate = Locator(old.port)
    client = PipelinedRedis(old.url, timeout=2.0, locate=locate)
    assert await client.execute("SET", "conduit:k", "1") == b"OK"

    # The failover, as Sentinel performs it: the new one promoted, the old one made its replica.
    locate.port = new.port
    await admin[0].replicaof("127.0.0.1", new.port)
    with pytest.raises(redis_exc.ConnectionError, match="no longer the primary"):
        await client.execute("SET", "conduit:k", "2")  # answered READONLY by the old primary
    assert await client.execute("SET", "conduit:k", "3") == b"OK"
    assert await admin[1].get("conduit:k") == b"3"
    assert locate.asked == 2
    await client.close()


async def test_without_sentinel_readonly_still_drops_the_connection(
    pair: tuple[RedisServer, RedisServer], admin: tuple[aioredis.Redis, aioredis.Redis]
) -> None:
    """A provider's failover behind one DNS name looks the same: READONLY, then reconnect."""
    server, other = pair
    client = PipelinedRedis(server.url, timeout=2.0)
    assert await client.execute("SET", "conduit:k", "1") == b"OK"
    await admin[0].replicaof("127.0.0.1", other.port)
    with pytest.raises(redis_exc.ConnectionError, match="no longer the primary"):
        await client.execute("SET", "conduit:k", "2")
    await admin[0].replicaof("NO", "ONE")
    assert await client.execute("SET", "conduit:k", "3") == b"OK"
    await client.close()
