"""The Redis clients and their circuit breaker.

Redis is optional: without REDIS_URL every feature falls back to in-process behaviour and
health reports it as `disabled`. Every command goes through the breaker (`RedisService.run` for
redis-py commands, `RedisService.evalsha` for the script run on every request), so once Redis is
known dead a request pays nothing for it.

Two clients to the same Redis: one pipelined connection per process (`app.db.redis_pipeline`)
for every command a request sends (the rate limiter's script, cache reads, writes and
invalidations), where redis-py's per-command overhead (~45 us of CPU) was a tenth of a
request's cost; and redis-py for the health check's ping and for operators' tools and tests.
Both take their parameters from `app.db.redis_connection` (TLS, ACL credentials, Sentinel), and
with Sentinel they share one `Sentinel` client to ask where the primary is.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from opentelemetry.trace import Tracer
from redis import exceptions as redis_exc
from redis.asyncio import Redis
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel

from app.core.config import Settings
from app.core.logging_config import get_logger
from app.db.redis_connection import (
    RedisEndpoint,
    endpoint_from_settings,
    redis_py_client,
    sentinel_for,
)
from app.db.redis_pipeline import Arg, PipelinedRedis
from app.resilience.circuit_breaker import CircuitBreaker, CircuitOpenError

log = get_logger(__name__)
T = TypeVar("T")

# In MasterNotFoundError's message, what follows each Sentinel client's repr.
_SENTINEL_ANSWER = re.compile(r" - ([^<]*?)(?:, <|$)")

# What a dead or slow Redis raises (redis' TimeoutError subclasses its ConnectionError family),
# and NOPERM: an ACL user missing a command or the key prefix makes Redis unusable, not a 500.
REDIS_ERRORS: tuple[type[BaseException], ...] = (
    redis_exc.ConnectionError,
    redis_exc.NoPermissionError,
    redis_exc.TimeoutError,
    redis_exc.BusyLoadingError,
    ConnectionError,
    TimeoutError,
    OSError,
)


class RedisUnavailableError(Exception):
    """Redis is disabled, down, or its breaker is open."""


class RedisCommandFailedError(RedisUnavailableError):
    """A command reached for Redis and failed: transient, worth one quick retry when idempotent."""


class RedisService:
    def __init__(
        self, settings: Settings, breaker: CircuitBreaker, tracer: Tracer | None = None
    ) -> None:
        self.breaker = breaker
        self.client: Redis | None = None
        self.pipeline: PipelinedRedis | None = None
        self.endpoint: RedisEndpoint | None = endpoint_from_settings(settings)
        self.sentinel: Sentinel | None = None
        self.primary: tuple[str, int] | None = None  # with Sentinel: where it was last found
        self.last_error: str | None = None  # the last command's failure, for health
        endpoint = self.endpoint
        if endpoint is not None:
            self.sentinel = sentinel_for(endpoint)
            locate = self._locate_primary if self.sentinel is not None else None
            if tracer is None:
                self.pipeline = PipelinedRedis(endpoint, locate=locate)
            else:
                from app.db.redis_tracing import TracedPipelinedRedis  # only with tracing on

                self.pipeline = TracedPipelinedRedis(endpoint, tracer=tracer, locate=locate)
            self.client = redis_py_client(endpoint, self.sentinel)

    async def _locate_primary(self) -> tuple[str, int]:
        """The primary's address as the Sentinels give it; a change is logged once."""
        sentinel, endpoint = self.sentinel, self.endpoint
        assert sentinel is not None  # nosec B101 # settings guarantee it
        assert endpoint is not None  # nosec B101 # settings guarantee it
        assert endpoint.master_name is not None  # nosec B101 # settings guarantee it
        try:
            host, port = await sentinel.discover_master(endpoint.master_name)
        except MasterNotFoundError as exc:
            # redis-py's message embeds each Sentinel client's repr (a screenful per Sentinel):
            # keep only what each one answered.
            answers = "; ".join(_SENTINEL_ANSWER.findall(str(exc))) or "no usable primary"
            message = f"no Sentinel named a primary {endpoint.master_name!r}: {answers}"
            raise MasterNotFoundError(message) from exc
        address = (str(host), int(port))
        if address != self.primary:
            log.info(
                "redis_primary_located",
                master_name=endpoint.master_name,
                address=f"{address[0]}:{address[1]}",
                previous=f"{self.primary[0]}:{self.primary[1]}" if self.primary else None,
            )
            self.primary = address
        return address

    def describe(self, *, with_last_error: bool = False) -> dict[str, object]:
        """Topology for operators' health (no credentials); with the last command's failure,
        which an open breaker would otherwise hide behind "open"."""
        if self.endpoint is None:
            return {}
        info = self.endpoint.describe()
        if self.primary is not None:
            info["primary"] = f"{self.primary[0]}:{self.primary[1]}"
        if with_last_error:
            info["last_error"] = self.last_error
        return info

    @property
    def enabled(self) -> bool:
        return self.client is not None

    async def run(self, command: Callable[[Redis], Awaitable[T]]) -> T:
        client = self.client
        if client is None:
            raise RedisUnavailableError("redis is not configured")
        return await self._guarded(lambda: command(client))

    async def execute(self, *args: Arg) -> object:
        """One command on the pipelined connection (its reply as hiredis decodes it)."""
        pipeline = self.pipeline
        if pipeline is None:
            raise RedisUnavailableError("redis is not configured")
        return await self._guarded(lambda: pipeline.execute(*args))

    async def evalsha(
        self, script: str, sha: str, keys: Sequence[Arg], args: Sequence[Arg]
    ) -> object:
        """A Lua script on the pipelined connection (loaded first if Redis does not know it)."""
        pipeline = self.pipeline
        if pipeline is None:
            raise RedisUnavailableError("redis is not configured")
        return await self._guarded(lambda: pipeline.evalsha(script, sha, keys, args))

    async def _guarded(self, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await self.breaker.call(call)
        except CircuitOpenError as exc:
            raise RedisUnavailableError(str(exc)) from exc
        except REDIS_ERRORS as exc:
            # Kept for health: once the breaker is open, its checks only say "open".
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise RedisCommandFailedError(self.last_error) from exc

    async def ping(self) -> float:
        """Round-trip time in milliseconds; raises RedisUnavailableError."""
        started = time.perf_counter()
        await self.run(lambda r: r.ping())
        return (time.perf_counter() - started) * 1000

    async def close(self) -> None:
        if self.pipeline is not None:
            await self.pipeline.close()
        if self.client is not None:
            await self.client.aclose()
        if self.sentinel is not None:
            await self.sentinel.aclose()
