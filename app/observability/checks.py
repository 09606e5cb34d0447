"""Dependency probes for readiness and detailed health, each bounded by a short timeout."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.database_production import ping, pool_status
from app.db.redis import RedisService, RedisUnavailableError
from app.services.storage import ImageStorage, StorageCheckError

CHECK_TIMEOUT_SECONDS = 1.0
Status = Literal["ok", "down", "disabled"]


@dataclass(slots=True)
class CheckResult:
    status: Status
    latency_ms: float | None = None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.status, "latency_ms": self.latency_ms}
        if self.error:
            body["error"] = self.error
        body.update(self.details)
        return body

    def public(self) -> dict[str, Any]:
        """What anyone may see: the status and latency. The error (an exception's class or
        text, a host, a path) and the details are for the log and /health/detailed only."""
        return {"status": self.status, "latency_ms": self.latency_ms}


async def check_database(engine: AsyncEngine, limit: float = CHECK_TIMEOUT_SECONDS) -> CheckResult:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(limit):
            await ping(engine)
    except Exception as exc:
        return CheckResult("down", error=type(exc).__name__)
    return CheckResult("ok", latency_ms=round((time.perf_counter() - started) * 1000, 2))


async def check_redis(redis: RedisService, limit: float = CHECK_TIMEOUT_SECONDS) -> CheckResult:
    if not redis.enabled:
        return CheckResult("disabled")
    try:
        async with asyncio.timeout(limit):
            latency = await redis.ping()
    except (RedisUnavailableError, TimeoutError) as exc:
        return CheckResult("down", error=str(exc) or type(exc).__name__)
    return CheckResult("ok", latency_ms=round(latency, 2))


async def check_storage(storage: ImageStorage, limit: float = CHECK_TIMEOUT_SECONDS) -> CheckResult:
    """Where images go, whether the store answers now (outside its breaker, which is reported
    as it stands) and the last failed request. Detailed health only: never readiness."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(limit):
            measured = await storage.check()
    except TimeoutError:
        error = f"no answer within {limit:g} s"
        return CheckResult("down", error=error, details=storage.describe())
    except StorageCheckError as exc:
        return CheckResult("down", error=str(exc), details=storage.describe())
    latency = round((time.perf_counter() - started) * 1000, 2)
    return CheckResult("ok", latency_ms=latency, details={**storage.describe(), **measured})


def database_pool(engine: AsyncEngine) -> dict[str, int]:
    return pool_status(engine)
