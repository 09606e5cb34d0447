"""A lean asyncio Redis client for the one command run on every request: the rate-limit script.

Why not redis-py: its asyncio client spends ~45 µs of CPU per EVALSHA under 64-way concurrency
(a pooled connection checked out and back, a lock, a timer and a parser per call); this client
spends ~3 µs. It keeps ONE connection per process and pipelines every command on it: commands
queued in one event-loop iteration leave in one write, Redis answers in order, and a FIFO of
futures matches replies to callers. Encoding (`hiredis.pack_command`) and parsing
(`hiredis.Reader`) are C.

What it keeps from redis-py, so callers and the circuit breaker need not know the difference:
URL parsing (`parse_url`, through `app.db.redis_connection`), the exception classes
(`ResponseError`, `NoScriptError`, `ConnectionError`, `TimeoutError`, ...) and their mapping from
error replies.

And what redis-py guarantees for the topologies operators run (`app.db.redis_connection` builds
the parameters for both clients from the same settings):
- TLS: rediss:// connects with an `ssl.SSLContext` that verifies the chain (REDIS_TLS_CA_FILE or
  the system CAs) and, unless switched off, the host name; optionally a client certificate.
- ACL: `AUTH username password` before anything else is sent.
- Connection checks before any caller's command: with TLS, a PING when nothing else is sent (a
  TLS 1.3 server refuses a client certificate only after the handshake).
- Sentinel: each (re)connect asks the Sentinels for the primary (`locate`, redis-py's
  `Sentinel.discover_master`) and confirms with ROLE that the server is the primary before any
  caller's command is sent. A failover is followed without a watcher: the old primary's
  connection breaks (killed) or answers READONLY / MASTERDOWN (demoted, or a replica that lost its
  primary); either way the connection is dropped, its commands fail with `ConnectionError` (what
  the circuit breaker counts), and the next command connects afresh, asking the Sentinels again.
  The same READONLY rule follows a provider's DNS failover without Sentinels.

Timeouts without a timer per command: each pending command records when it was sent, and one
watchdog timer, armed only while something is pending, checks the oldest. If Redis has not
answered it within `timeout`, the connection is stuck: it is aborted and everything pending on it
fails with `TimeoutError`. The next command connects again.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

import hiredis
from redis import exceptions as redis_exc
from redis._parsers.base import BaseParser

from app.core.logging_config import get_logger
from app.db.redis_connection import RedisEndpoint, endpoint_from_url

log = get_logger(__name__)

Arg = bytes | str | int | float

# hiredis' stub types its argument as a 1-tuple; it takes any tuple of these.
_pack_command = cast("Callable[[tuple[Arg, ...]], bytes]", hiredis.pack_command)

# redis-py's own mapping of error replies to exception classes ("NOSCRIPT ..." -> NoScriptError,
# "WRONGPASS ..." -> AuthenticationError, "LOADING ..." -> BusyLoadingError, ...); hiredis calls it
# for each error reply, as redis-py's hiredis parser does, so `gets()` returns the exception.
_reply_error = cast("Callable[[str], Exception]", BaseParser.parse_error)

# A watchdog callback that runs this close to the deadline counts it as reached: uvloop's timers
# have millisecond resolution, and re-arming for the remaining sliver would only spin.
_WATCHDOG_SLACK = 0.001

DEFAULT_TIMEOUT = 0.5  # seconds, for a client built from a bare URL without one

_Pending = tuple["asyncio.Future[object]", float]

# Asks where the primary is (Sentinel); None: the endpoint's own host and port.
Locator = Callable[[], Awaitable[tuple[str, int]]]


def _demoted(reply: Exception) -> bool:
    """An error reply that says this server is not (or no longer) a usable primary."""
    return isinstance(reply, redis_exc.ReadOnlyError) or str(reply).startswith("MASTERDOWN")


class _Connection(asyncio.Protocol):
    """One transport, its reply parser and the FIFO of futures awaiting replies."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self.closed = False
        self.lost: asyncio.Future[None] = loop.create_future()
        self._transport: asyncio.Transport | None = None
        self._reader = hiredis.Reader(replyError=_reply_error)
        self._pending: deque[_Pending] = deque()
        self._outgoing: list[bytes] = []
        self._watchdog: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)
        _set_nodelay(transport)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        pending = self._pending
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                # The byte stream is corrupt: no later reply can be matched to its caller.
                self.abort(redis_exc.ConnectionError, f"Redis protocol error: {exc}")
                return
            if reply is False:
                return
            if not pending:
                self.abort(redis_exc.ConnectionError, "Redis sent a reply nobody asked for")
                return
            future = pending.popleft()[0]
            if future.done():
                # Its caller was cancelled: the reply is consumed all the same, which keeps the
                # FIFO in step with Redis.
                continue
            if isinstance(reply, Exception):
                if _demoted(reply):
                    # Every later command would meet the same answer: drop the connection so the
                    # next one finds the new primary.
                    message = f"Redis is no longer the primary: {reply}"
                    future.set_exception(redis_exc.ConnectionError(message))
                    self.abort(redis_exc.ConnectionError, message)
                    return
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_pending(redis_exc.ConnectionError, f"connection to Redis lost: {exc or 'EOF'}")
        if not self.lost.done():
            self.lost.set_result(None)

    # -- sending ---------------------------------------------------------------------------------

    def request(self, payload: bytes) -> asyncio.Future[object]:
        """Queue one encoded command; the future resolves to its reply."""
        future: asyncio.Future[object] = self.loop.create_future()
        if not self._outgoing:
            # Commands queued in the same loop iteration leave in one write (one syscall), which
            # is most of what pipelining saves when many requests are in flight.
            self.loop.call_soon(self._flush)
        self._outgoing.append(payload)
        self._pending.append((future, self.loop.time()))
        if self._watchdog is None:
            self._watchdog = self.loop.call_later(self.timeout, self._check_oldest)
        return future

    def _flush(self) -> None:
        outgoing = self._outgoing
        self._outgoing = []
        if not self.closed and self._transport is not None:
            self._transport.write(b"".join(outgoing))

    # -- failure ---------------------------------------------------------------------------------

    def _check_oldest(self) -> None:
        """The watchdog: abort the connection if its oldest command has waited too long."""
        self._watchdog = None
        if not self._pending:
            return  # Re-armed by the next request.
        remaining = self._pending[0][1] + self.timeout - self.loop.time()
        if remaining <= _WATCHDOG_SLACK:
            self.abort(redis_exc.TimeoutError, f"no reply from Redis within {self.timeout}s")
        else:
            # Replies arrived since the timer was set: the oldest is younger now. One timer per
            # `timeout` at most under steady load, however many commands.
            self._watchdog = self.loop.call_later(remaining, self._check_oldest)

    def abort(self, error: type[redis_exc.RedisError], message: str) -> None:
        """Drop the connection now, failing everything pending on it with `error`."""
        self._fail_pending(error, message)
        if self._transport is not None:
            self._transport.abort()

    def _fail_pending(self, error: type[redis_exc.RedisError], message: str) -> None:
        self.closed = True
        self._outgoing.clear()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        pending = self._pending
        while pending:
            future = pending.popleft()[0]
            if not future.done():
                # An instance each: one exception raised in many tasks would chain tracebacks.
                future.set_exception(error(message))


def _set_nodelay(transport: asyncio.BaseTransport) -> None:
    """A small command must leave at once, not wait for Nagle to batch it with the next."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        # OSError: already closed; the connection's failure will surface on its own.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class PipelinedRedis:
    """One pipelined connection to Redis, opened on first use and reopened after a failure.

    `target` is an endpoint from `app.db.redis_connection` (or a URL, for tools and tests);
    `locate`, when given, is asked for the primary's address on every connect (Sentinel).
    """

    def __init__(
        self,
        target: RedisEndpoint | str,
        *,
        timeout: float | None = None,
        locate: Locator | None = None,
    ) -> None:
        if isinstance(target, str):
            target = endpoint_from_url(target, timeout=timeout or DEFAULT_TIMEOUT)
        self.timeout = timeout or target.timeout
        self._path = target.path
        self._host = target.host
        self._port = target.port
        self._ssl = target.tls.context() if target.tls is not None else None
        self._locate = locate
        self._handshake = _handshake(
            target, confirm_primary=locate is not None, confirm_tls=self._ssl is not None
        )
        self._conn: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None
        self._closed = False

    async def execute(self, *args: Arg) -> object:
        """Send one command; its reply as hiredis decodes it (bytes, int, list, None).

        Raises redis-py's exceptions: `ResponseError` (or a subclass) for an error reply,
        `ConnectionError` when Redis cannot be reached, `TimeoutError` when it does not answer.
        """
        try:
            payload = _pack_command(args)
        except TypeError as exc:
            raise redis_exc.DataError(str(exc)) from exc
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connect()
        return await conn.request(payload)

    async def evalsha(
        self, script: str, sha: str, keys: Sequence[Arg], args: Sequence[Arg]
    ) -> object:
        """EVALSHA, loading `script` once if Redis does not know it (restarted, SCRIPT FLUSH)."""
        command = ("EVALSHA", sha, len(keys), *keys, *args)
        try:
            return await self.execute(*command)
        except redis_exc.NoScriptError:
            await self.execute("SCRIPT", "LOAD", script)
            return await self.execute(*command)

    async def close(self) -> None:
        """Close the connection, failing pending commands with ConnectionError. Idempotent."""
        self._closed = True
        if self._connecting is not None:
            # Bounded by the connect timeout; the attempt sees `_closed` and drops what it got.
            await asyncio.wait({self._connecting})
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort(redis_exc.ConnectionError, "Redis client closed")
            await conn.lost

    # -- connecting ------------------------------------------------------------------------------

    async def _connect(self) -> _Connection:
        """Await the connect attempt in flight, starting one if none is."""
        if self._closed:
            raise redis_exc.ConnectionError("Redis client closed")
        task = self._connecting
        if task is None:
            task = asyncio.get_running_loop().create_task(self._open())
            task.add_done_callback(self._connect_done)
            self._connecting = task
        # Shielded: a caller cancelled while waiting must not cancel the others' attempt.
        return await asyncio.shield(task)

    def _connect_done(self, task: asyncio.Task[_Connection]) -> None:
        self._connecting = None
        if not task.cancelled():
            task.exception()  # Retrieved here, in case every caller waiting on it was cancelled.

    async def _open(self) -> _Connection:
        if self._locate is not None:
            # Outside the connect's timeout: each Sentinel asked is bounded by its client's own
            # timeouts, and one that does not answer must not use up the whole budget.
            # MasterNotFoundError is a ConnectionError, as callers expect.
            try:
                self._host, self._port = await self._locate()
            except redis_exc.ConnectionError as exc:
                self._log_failure(exc, address="the Sentinels")
                raise
        connected = False
        try:
            async with asyncio.timeout(self.timeout):
                conn = await self._open_connection()
                connected = True
                try:
                    await self._run_handshake(conn)
                except BaseException:
                    conn.abort(redis_exc.ConnectionError, "Redis handshake failed")
                    raise
        except redis_exc.ConnectionError as exc:
            # AuthenticationError, BusyLoadingError, ...: already what callers expect.
            self._log_failure(exc, refused_after_tls=connected and self._ssl is not None)
            raise
        except (OSError, redis_exc.RedisError) as exc:  # OSError includes the timeout.
            where = self._path or f"{self._host}:{self._port}"
            message = f"cannot connect to Redis at {where}: {type(exc).__name__}: {exc}"
            self._log_failure(exc, refused_after_tls=connected and self._ssl is not None)
            raise redis_exc.ConnectionError(message) from exc
        if self._closed:
            conn.abort(redis_exc.ConnectionError, "Redis client closed")
            raise redis_exc.ConnectionError("Redis client closed")
        self._conn = conn
        return conn

    def _log_failure(
        self, exc: BaseException, address: str | None = None, *, refused_after_tls: bool = False
    ) -> None:
        """One line per failed connect (the breaker spaces them out once it is open), saying
        why: a wrong password or an unverifiable certificate is a setting to fix, not an
        outage to wait for.

        `refused_after_tls`: the TLS handshake completed, then the server dropped the
        connection before its first reply. With TLS 1.3 that is how a server refusing the
        client's certificate shows, as an alert or as a plain reset, whichever the kernel
        delivers first."""
        lost = isinstance(exc, ConnectionResetError | BrokenPipeError) or "lost" in str(exc)
        if isinstance(
            exc, redis_exc.AuthenticationError | redis_exc.AuthorizationError
        ) or "AuthenticationError" in str(exc):  # a Sentinel's refusal, inside MasterNotFound
            reason = "authentication"
        elif isinstance(exc, ssl.SSLError) or "[SSL" in str(exc) or (refused_after_tls and lost):
            reason = "tls"
        elif isinstance(exc, TimeoutError | redis_exc.TimeoutError):
            reason = "timeout"
        elif "not the primary" in str(exc):
            reason = "not_primary"
        else:
            reason = "unreachable"
        log.warning(
            "redis_connection_failed",
            address=address or self._path or f"{self._host}:{self._port}",
            reason=reason,
            error=f"{type(exc).__name__}: {exc}",
        )

    async def _open_connection(self) -> _Connection:
        loop = asyncio.get_running_loop()

        def factory() -> _Connection:
            return _Connection(loop, self.timeout)

        if self._path is not None:
            _, conn = await loop.create_unix_connection(factory, self._path)
        else:
            _, conn = await loop.create_connection(factory, self._host, self._port, ssl=self._ssl)
        return conn

    async def _run_handshake(self, conn: _Connection) -> None:
        """AUTH, SELECT, (TLS) PING and (Sentinel) ROLE, pipelined, answered before any
        caller's command."""
        if not self._handshake:
            return
        futures = [conn.request(payload) for payload in self._handshake]
        replies = await asyncio.gather(*futures, return_exceptions=True)
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        if self._locate is not None:
            role = cast("list[object]", replies[-1])[0]
            if role != b"master":
                # The Sentinels' answer is stale (a failover under way): try again later.
                where = f"{self._host}:{self._port}"
                raise redis_exc.ConnectionError(f"Redis at {where} is a {role!r}, not the primary")


def _handshake(endpoint: RedisEndpoint, *, confirm_primary: bool, confirm_tls: bool) -> list[bytes]:
    commands: list[bytes] = []
    if endpoint.password is not None:
        # AUTH with a username needs Redis 6's ACLs; without one it works everywhere.
        auth: tuple[Arg, ...] = (
            ("AUTH", endpoint.username, endpoint.password)
            if endpoint.username
            else ("AUTH", endpoint.password)
        )
        commands.append(_pack_command(auth))
    if endpoint.db != 0:
        commands.append(_pack_command(("SELECT", endpoint.db)))
    if confirm_tls and not commands:
        # With TLS 1.3 a server that refuses the client's certificate says so after the
        # handshake: one reply proves the connection usable before callers' commands go out.
        commands.append(_pack_command(("PING",)))
    if confirm_primary:
        commands.append(_pack_command(("ROLE",)))
    return commands
