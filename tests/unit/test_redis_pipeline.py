"""PipelinedRedis against real redis-server processes: replies matched to callers in order,
redis-py's exceptions for error replies, the watchdog's timeouts, outages, reconnects and
cancellation.

Outage tests stop and start a server of their own, never the session's; the unresponsive server is
an asyncio server on loopback that reads and discards.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import uvloop
from redis import exceptions as redis_exc

from app.db.redis_pipeline import PipelinedRedis
from devstack.servers import RedisServer, _redis_binary, free_port

SCRIPT = "return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1] .. ':calls')}"
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()  # How Redis names scripts.


@pytest.fixture
async def pipelined(redis_server: RedisServer) -> AsyncIterator[PipelinedRedis]:
    client = PipelinedRedis(redis_server.url, timeout=2.0)
    await client.execute("FLUSHDB")
    yield client
    await client.close()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server this test may stop, restart or lock with a password."""
    server = RedisServer(free_port(), tmp_path / "redis")
    server.start()
    yield server
    server.stop()


async def _swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while await reader.read(65536):
            pass
    except ConnectionError:
        pass  # The client aborted: what a timeout does.
    writer.close()


@pytest.fixture
async def silent_url() -> AsyncIterator[str]:
    """A server that accepts connections and reads commands but never answers."""
    server = await asyncio.start_server(_swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"redis://127.0.0.1:{port}/0"
    server.close()
    await server.wait_closed()


# -- commands and replies ------------------------------------------------------------------------


async def test_replies_come_back_as_hiredis_decodes_them(pipelined: PipelinedRedis) -> None:
    assert await pipelined.execute("SET", "k", "v") == b"OK"
    assert await pipelined.execute("GET", "k") == b"v"
    assert await pipelined.execute("GET", "missing") is None
    assert await pipelined.execute("INCR", "n") == 1
    assert await pipelined.execute("INCRBY", b"n", 41) == 42
    assert await pipelined.execute("SET", "f", 1.5) == b"OK"
    assert await pipelined.execute("GET", "f") == b"1.5"
    assert await pipelined.execute("RPUSH", "l", "a", b"b") == 2
    assert await pipelined.execute("MGET", "k", "missing", "n") == [b"v", None, b"42"]
    assert await pipelined.execute("LRANGE", "l", 0, -1) == [b"a", b"b"]


async def test_error_reply_fails_its_command_only(pipelined: PipelinedRedis) -> None:
    await pipelined.execute("SET", "word", "hello")
    with pytest.raises(redis_exc.ResponseError, match="not an integer") as caught:
        await pipelined.execute("INCR", "word")
    assert type(caught.value) is redis_exc.ResponseError
    with pytest.raises(redis_exc.ResponseError, match="unknown command"):
        await pipelined.execute("NOSUCHCOMMAND")
    # Same connection, still in step.
    assert await pipelined.execute("GET", "word") == b"hello"
    assert await pipelined.execute("INCR", "counter") == 1


async def test_argument_that_cannot_be_encoded_is_a_data_error(pipelined: PipelinedRedis) -> None:
    with pytest.raises(redis_exc.DataError):
        await pipelined.execute("SET", "k", None)  # type: ignore[arg-type]
    assert await pipelined.execute("PING") == b"PONG"


async def test_concurrent_callers_each_get_their_own_reply(pipelined: PipelinedRedis) -> None:
    callers = 500

    async def caller(i: int) -> int:
        await pipelined.execute("SET", f"key:{i}", f"value:{i}")
        assert await pipelined.execute("GET", f"key:{i}") == f"value:{i}".encode()
        counted = await pipelined.execute("INCR", "shared")
        assert isinstance(counted, int)
        assert await pipelined.execute("STRLEN", f"key:{i}") == len(f"value:{i}")
        return counted

    counts = await asyncio.gather(*(caller(i) for i in range(callers)))
    assert sorted(counts) == list(range(1, callers + 1))


async def test_one_connection_with_nodelay(pipelined: PipelinedRedis) -> None:
    ids = await asyncio.gather(*(pipelined.execute("CLIENT", "ID") for _ in range(50)))
    assert len(set(ids)) == 1  # Fifty concurrent commands, one connection.
    conn = pipelined._conn
    assert conn is not None
    sock = conn._transport.get_extra_info("socket") if conn._transport else None
    assert sock is not None
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


# -- scripts -------------------------------------------------------------------------------------


async def test_evalsha_loads_the_script_when_redis_does_not_know_it(
    pipelined: PipelinedRedis,
) -> None:
    await pipelined.execute("SCRIPT", "FLUSH")
    first = await pipelined.evalsha(SCRIPT, SCRIPT_SHA, ["rl:a"], [7])
    assert first == [b"rl:a", b"7", 1]
    assert await pipelined.execute("SCRIPT", "EXISTS", SCRIPT_SHA) == [1]
    assert await pipelined.evalsha(SCRIPT, SCRIPT_SHA, ["rl:a"], [b"x"]) == [b"rl:a", b"x", 2]

    await pipelined.execute("SCRIPT", "FLUSH")  # What a Redis restart does to the script cache.
    assert await pipelined.evalsha(SCRIPT, SCRIPT_SHA, ["rl:a"], [1.5]) == [b"rl:a", b"1.5", 3]


async def test_evalsha_raises_redis_py_errors(pipelined: PipelinedRedis) -> None:
    failing = "return redis.error_reply('LIMITED too many')"
    sha = hashlib.sha1(failing.encode()).hexdigest()
    with pytest.raises(redis_exc.ResponseError, match="too many"):
        await pipelined.evalsha(failing, sha, [], [])
    with pytest.raises(redis_exc.NoScriptError):
        await pipelined.execute("EVALSHA", "0" * 40, 0)
    assert await pipelined.execute("PING") == b"PONG"


# -- URL: database and credentials ---------------------------------------------------------------


async def test_database_from_the_url(redis_server: RedisServer) -> None:
    db3 = PipelinedRedis(f"redis://127.0.0.1:{redis_server.port}/3", timeout=2.0)
    db0 = PipelinedRedis(redis_server.url, timeout=2.0)
    try:
        await db3.execute("SET", "where", "db3")
        info = await db3.execute("CLIENT", "INFO")
        assert isinstance(info, bytes)
        assert b" db=3 " in info
        assert await db0.execute("GET", "where") is None
        assert await db0.execute("SELECT", 3) == b"OK"
        assert await db0.execute("GET", "where") == b"db3"
        await db3.execute("FLUSHDB")

        out_of_range = PipelinedRedis(f"redis://127.0.0.1:{redis_server.port}/999", timeout=2.0)
        with pytest.raises(redis_exc.ConnectionError, match="DB index is out of range"):
            await out_of_range.execute("PING")
        await out_of_range.close()
    finally:
        await db3.close()
        await db0.close()


async def test_password_from_the_url(own_server: RedisServer) -> None:
    port = own_server.port
    admin = PipelinedRedis(own_server.url, timeout=2.0)
    await admin.execute("CONFIG", "SET", "requirepass", "secret")
    await admin.close()

    for url in (
        f"redis://:secret@127.0.0.1:{port}/0",
        f"redis://default:secret@127.0.0.1:{port}/2",  # Redis 6 ACL form, with a SELECT.
    ):
        client = PipelinedRedis(url, timeout=2.0)
        assert await client.execute("PING") == b"PONG"
        await client.close()

    wrong = PipelinedRedis(f"redis://:nope@127.0.0.1:{port}/0", timeout=2.0)
    # Refused at AUTH, while connecting, not by a NOAUTH reply to the PING.
    with pytest.raises(redis_exc.AuthenticationError, match="invalid username-password"):
        await wrong.execute("PING")
    await wrong.close()

    anonymous = PipelinedRedis(own_server.url, timeout=2.0)
    with pytest.raises(redis_exc.AuthenticationError, match="Authentication required"):
        await anonymous.execute("PING")
    await anonymous.close()


async def test_unix_socket_url(tmp_path: Path) -> None:
    path = tmp_path / "redis.sock"
    process = await asyncio.create_subprocess_exec(
        *(_redis_binary(), "--port", "0", "--unixsocket", str(path), "--save", ""),
        cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            if path.exists():
                break
            await asyncio.sleep(0.01)
        client = PipelinedRedis(f"unix://{path}?db=4", timeout=2.0)
        info = await client.execute("CLIENT", "INFO")
        assert isinstance(info, bytes)
        assert b" db=4 " in info
        await client.close()
    finally:
        process.terminate()
        await process.wait()


# -- outages and timeouts ------------------------------------------------------------------------


async def test_server_down_fails_fast_and_the_client_reconnects(own_server: RedisServer) -> None:
    timeout = 5.0
    client = PipelinedRedis(own_server.url, timeout=timeout)
    try:
        assert await client.execute("SET", "k", "before") == b"OK"
        blocked = asyncio.ensure_future(client.execute("BLPOP", "nothing", 10))
        await asyncio.sleep(0.05)

        started = time.perf_counter()
        own_server.stop()
        with pytest.raises(redis_exc.ConnectionError):
            await blocked
        with pytest.raises(redis_exc.ConnectionError):
            await client.execute("GET", "k")
        assert time.perf_counter() - started < 1.0  # Far under `timeout`: no waiting on it.

        own_server.start()
        assert await client.execute("SET", "k", "after") == b"OK"
        assert await client.execute("GET", "k") == b"after"
    finally:
        await client.close()


async def test_connect_failure_is_a_connection_error() -> None:
    client = PipelinedRedis(f"redis://127.0.0.1:{free_port()}/0", timeout=2.0)
    started = time.perf_counter()
    results = await asyncio.gather(
        *(client.execute("PING") for _ in range(10)), return_exceptions=True
    )
    assert all(isinstance(r, redis_exc.ConnectionError) for r in results)
    assert time.perf_counter() - started < 1.0
    await client.close()


async def test_unresponsive_server_times_out(silent_url: str) -> None:
    timeout = 0.3
    client = PipelinedRedis(silent_url, timeout=timeout)
    try:
        started = time.perf_counter()
        with pytest.raises(redis_exc.TimeoutError):
            await client.execute("PING")
        elapsed = time.perf_counter() - started
        assert timeout * 0.9 <= elapsed < timeout + 1.0
    finally:
        await client.close()


async def test_watchdog_fails_every_pending_command_at_once(silent_url: str) -> None:
    timeout = 0.3
    client = PipelinedRedis(silent_url, timeout=timeout)
    try:
        started = time.perf_counter()
        early = [asyncio.ensure_future(client.execute("GET", f"k{i}")) for i in range(20)]
        await asyncio.sleep(timeout / 2)
        late = [asyncio.ensure_future(client.execute("GET", f"k{i}")) for i in range(20)]
        results = await asyncio.gather(*early, *late, return_exceptions=True)
        elapsed = time.perf_counter() - started
        # The oldest command's deadline aborts the connection, so the younger ones fail with it.
        assert all(isinstance(r, redis_exc.TimeoutError) for r in results)
        assert timeout * 0.9 <= elapsed < timeout + 1.0

        # The next command opens a new connection, and times out again.
        with pytest.raises(redis_exc.TimeoutError):
            await client.execute("PING")
    finally:
        await client.close()


async def test_steady_traffic_longer_than_the_timeout_never_times_out(
    redis_server: RedisServer,
) -> None:
    # The watchdog re-arms on the oldest pending command, not on the first one it ever saw.
    client = PipelinedRedis(redis_server.url, timeout=0.2)
    try:
        deadline = time.perf_counter() + 0.7
        calls = 0
        while time.perf_counter() < deadline:
            await asyncio.gather(*(client.execute("PING") for _ in range(8)))
            calls += 8
            await asyncio.sleep(0.01)
        assert calls > 100
        # A command slower than nothing but faster than the timeout is fine too.
        assert await client.execute("BLPOP", "never:pushed", 0.1) is None
    finally:
        await client.close()


# -- cancellation and close ----------------------------------------------------------------------


async def test_cancelled_caller_does_not_desynchronise_replies(
    pipelined: PipelinedRedis, redis_server: RedisServer
) -> None:
    other = PipelinedRedis(redis_server.url, timeout=2.0)
    try:
        await pipelined.execute("SET", "mine", "my value")
        waiting = asyncio.ensure_future(pipelined.execute("BLPOP", "queue", 2))
        await asyncio.sleep(0.05)  # BLPOP is on the wire and blocks the connection in Redis.
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

        # Queued behind the BLPOP; the BLPOP's reply (the pushed item) must not reach it.
        get = asyncio.ensure_future(pipelined.execute("GET", "mine"))
        await asyncio.sleep(0.02)
        assert await other.execute("RPUSH", "queue", "their item") == 1
        assert await get == b"my value"
        assert await pipelined.execute("LLEN", "queue") == 0  # The BLPOP did take the item.
        assert await pipelined.execute("PING") == b"PONG"
    finally:
        await other.close()


async def test_cancelled_caller_does_not_cancel_the_shared_connect(
    redis_server: RedisServer,
) -> None:
    client = PipelinedRedis(redis_server.url, timeout=2.0)
    try:
        tasks = [asyncio.ensure_future(client.execute("ECHO", str(i))) for i in range(10)]
        await asyncio.sleep(0)  # All ten are waiting on the one connect attempt.
        tasks[0].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[0], asyncio.CancelledError)
        assert results[1:] == [str(i).encode() for i in range(1, 10)]
    finally:
        await client.close()


async def test_close_fails_pending_commands_and_is_idempotent(
    pipelined: PipelinedRedis,
) -> None:
    assert await pipelined.execute("PING") == b"PONG"
    pending = [asyncio.ensure_future(pipelined.execute("BLPOP", "empty", 5)) for _ in range(3)]
    await asyncio.sleep(0.05)

    started = time.perf_counter()
    await pipelined.close()
    results = await asyncio.gather(*pending, return_exceptions=True)
    assert all(isinstance(r, redis_exc.ConnectionError) for r in results)
    assert time.perf_counter() - started < 1.0

    await pipelined.close()
    with pytest.raises(redis_exc.ConnectionError, match="closed"):
        await pipelined.execute("PING")


async def test_close_before_any_command(redis_server: RedisServer) -> None:
    client = PipelinedRedis(redis_server.url, timeout=2.0)
    await client.close()
    await client.close()


# -- uvloop --------------------------------------------------------------------------------------


async def _under_uvloop(url: str) -> None:
    client = PipelinedRedis(url, timeout=2.0)
    try:
        counts = await asyncio.gather(*(client.execute("INCR", "uv:count") for _ in range(200)))
        assert sorted(c for c in counts if isinstance(c, int)) == list(range(1, 201))
        with pytest.raises(redis_exc.ResponseError):
            await client.execute("LPUSH", "uv:count", "x")
        assert await client.execute("DEL", "uv:count") == 1
    finally:
        await client.close()

    server = await asyncio.start_server(_swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    silent = PipelinedRedis(f"redis://127.0.0.1:{port}/0", timeout=0.2)
    try:
        started = time.perf_counter()
        results = await asyncio.gather(
            *(silent.execute("PING") for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, redis_exc.TimeoutError) for r in results)
        assert time.perf_counter() - started < 1.2
    finally:
        await silent.close()
        server.close()


def test_works_under_uvloop(redis_server: RedisServer) -> None:
    # In a thread of its own: the session's asyncio loop stays out of it.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(uvloop.run, _under_uvloop(redis_server.url)).result(timeout=10)
