"""Per-client rate limits: moving windows in Redis, shared by every worker and replica, with an
in-process fallback while Redis is away.

Rules come from settings: RATE_LIMIT_DEFAULT on every API route, RATE_LIMIT_WRITE on top of it
for POST/PUT/PATCH/DELETE, RATE_LIMIT_LOGIN and RATE_LIMIT_REGISTER on top of those for the two
credential endpoints. Each rule counts separately (its name is part of the key).

Redis is reached through `RedisService.run`, i.e. through the Redis circuit breaker shared with
the cache: once the breaker is open a request pays nothing for the dead Redis and is counted in
process instead (still answering 429, per process rather than per fleet). The first Redis call
that succeeds again switches back. Each switch is logged once.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.exceptions import RedisError

from app.core.config import Settings
from app.core.logging_config import get_logger
from app.db.redis import RedisService, RedisUnavailableError

log = get_logger(__name__)

Backend = Literal["redis", "memory"]
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
KEY_PREFIX = "conduit:v1:ratelimit"


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    item: RateLimitItem


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_after: int  # seconds until the window frees a slot

    def headers(self) -> list[tuple[bytes, bytes]]:
        headers = [
            (b"ratelimit-limit", str(self.limit).encode()),
            (b"ratelimit-remaining", str(self.remaining).encode()),
            (b"ratelimit-reset", str(self.reset_after).encode()),
        ]
        if not self.allowed:
            headers.append((b"retry-after", str(max(self.reset_after, 1)).encode()))
        return headers


class RateLimiter:
    def __init__(self, settings: Settings, redis: RedisService) -> None:
        self.enabled = settings.RATE_LIMIT_ENABLED
        self.prefix = settings.API_PREFIX.rstrip("/")
        self.default = Rule("default", parse(settings.RATE_LIMIT_DEFAULT))
        self.write = Rule("write", parse(settings.RATE_LIMIT_WRITE))
        self.login = Rule("login", parse(settings.RATE_LIMIT_LOGIN))
        self.register = Rule("register", parse(settings.RATE_LIMIT_REGISTER))
        self.redis = redis
        self._memory = MovingWindowRateLimiter(MemoryStorage())
        self._shared: MovingWindowRateLimiter | None = None
        if redis.client is not None:
            storage = RedisStorage(
                "async+redis://",
                implementation="redispy",
                key_prefix=KEY_PREFIX,
                connection_pool=redis.client.connection_pool,  # type: ignore[arg-type]
            )
            self._shared = MovingWindowRateLimiter(storage)
        self.backend: Backend = "redis" if self._shared else "memory"

    def rules_for(self, method: str, path: str) -> list[Rule]:
        """Applicable rules, most specific first; none outside the API prefix."""
        if path != self.prefix and not path.startswith(self.prefix + "/"):
            return []
        route = path.rstrip("/")
        rules = [self.default]
        if method in WRITE_METHODS:
            rules.insert(0, self.write)
            if method == "POST" and route == f"{self.prefix}/users/login":
                rules.insert(0, self.login)
            elif method == "POST" and route == f"{self.prefix}/users":
                rules.insert(0, self.register)
        return rules

    async def check(self, rules: list[Rule], client_key: str) -> Decision:
        """Count one hit against each rule until one refuses; the tightest rule is reported."""
        if self._shared is not None:
            shared = self._shared
            try:
                decision = await self.redis.run(lambda _: _evaluate(shared, rules, client_key))
            except (RedisUnavailableError, RedisError) as exc:
                self._switch("memory", error=type(exc).__name__)
            else:
                self._switch("redis")
                return decision
        return await _evaluate(self._memory, rules, client_key)

    def _switch(self, backend: Backend, error: str | None = None) -> None:
        if backend == self.backend:
            return
        self.backend = backend
        if backend == "memory":
            log.warning("rate_limiter_fell_back_to_memory", error=error)
        else:
            log.info("rate_limiter_returned_to_redis")

    def status(self) -> dict[str, object]:
        return {"enabled": self.enabled, "backend": self.backend}


async def _evaluate(limiter: MovingWindowRateLimiter, rules: list[Rule], key: str) -> Decision:
    tightest: Decision | None = None
    for rule in rules:
        allowed = await limiter.hit(rule.item, rule.name, key)
        stats = await limiter.get_window_stats(rule.item, rule.name, key)
        decision = Decision(
            allowed=allowed,
            limit=rule.item.amount,
            remaining=max(stats.remaining, 0),
            reset_after=max(math.ceil(stats.reset_time - time.time()), 0),
        )
        if not allowed:
            return decision
        if tightest is None or decision.remaining < tightest.remaining:
            tightest = decision
    assert tightest is not None
    return tightest
