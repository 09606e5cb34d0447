"""The Redis client and its circuit breaker.

Redis is optional: without REDIS_URL every feature falls back to in-process behaviour and
health reports it as `disabled`. Every command goes through `RedisService.run`, i.e. through
the breaker, so once Redis is known dead a request pays nothing for it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis import exceptions as redis_exc
from redis.asyncio import Redis

from app.core.config import Settings
from app.core.logging_config import get_logger
from app.resilience.circuit_breaker import CircuitBreaker, CircuitOpenError

log = get_logger(__name__)
T = TypeVar("T")

# What a dead or slow Redis raises (redis' TimeoutError subclasses its ConnectionError family).
REDIS_ERRORS: tuple[type[BaseException], ...] = (
    redis_exc.ConnectionError,
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
    def __init__(self, settings: Settings, breaker: CircuitBreaker) -> None:
        self.breaker = breaker
        self.client: Redis | None = None
        if settings.REDIS_URL:
            self.client = Redis.from_url(
                settings.REDIS_URL,
                socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
                socket_connect_timeout=settings.REDIS_SOCKET_TIMEOUT,
                health_check_interval=30,
                # The breaker and tenacity policies decide on retries, not the client.
                retry_on_timeout=False,
                decode_responses=False,
            )

    @property
    def enabled(self) -> bool:
        return self.client is not None

    async def run(self, command: Callable[[Redis], Awaitable[T]]) -> T:
        client = self.client
        if client is None:
            raise RedisUnavailableError("redis is not configured")
        try:
            return await self.breaker.call(lambda: command(client))
        except CircuitOpenError as exc:
            raise RedisUnavailableError(str(exc)) from exc
        except REDIS_ERRORS as exc:
            raise RedisCommandFailedError(f"{type(exc).__name__}: {exc}") from exc

    async def ping(self) -> float:
        """Round-trip time in milliseconds; raises RedisUnavailableError."""
        started = time.perf_counter()
        await self.run(lambda r: r.ping())
        return (time.perf_counter() - started) * 1000

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
