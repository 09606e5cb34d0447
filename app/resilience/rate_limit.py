"""Per-client rate limits: moving windows in Redis, shared by every worker and replica, with an
in-process fallback while Redis is away.

Rules come from settings: RATE_LIMIT_DEFAULT on every API route, RATE_LIMIT_WRITE on top of it
for POST/PUT/PATCH/DELETE, RATE_LIMIT_LOGIN and RATE_LIMIT_REGISTER on top of those for the two
credential endpoints. Each rule counts separately (its name is part of the key).

In Redis, one Lua script counts a request against all of its rules and returns their window
statistics in a single atomic round trip (the same moving-window algorithm as the in-process
fallback from the `limits` library, which needs two round trips per rule). For a few GET routes
that are answered from the cache (`prefetch`: path -> cache key), the same script also returns
that key's value, so the route needs no second round trip; the route reads it from
`scope["state"]` through `app.api.deps.get_cache`. The value is read when the request is
counted, microseconds before the route would have read it, after any write that completed
before the request arrived.

Redis is reached through `RedisService.run`, i.e. through the Redis circuit breaker shared with
the cache: once the breaker is open a request pays nothing for the dead Redis and is counted in
process instead (still answering 429, per process rather than per fleet). The first Redis call
that succeeds again switches back. Each switch is logged once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from app.core.config import Settings
from app.core.logging_config import get_logger
from app.db.redis import RedisService, RedisUnavailableError

log = get_logger(__name__)

Backend = Literal["redis", "memory"]
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
KEY_PREFIX = "conduit:v1:ratelimit"
PREFETCHED_STATE = "cache_prefetched"  # scope["state"] key: {cache key: raw value or None}

# KEYS: one list per rule, newest timestamp first, then optionally one key to read. ARGV: now,
# the number of rules, then (limit, window seconds) per rule. Rules are counted in order until
# one refuses (later rules are then left untouched). Returns, per rule counted: allowed (1/0),
# hits in the window, the oldest hit in the window; then, if a key to read was given, its value.
MOVING_WINDOW_SCRIPT = """
local now = tonumber(ARGV[1])
local rules = tonumber(ARGV[2])
local out = {}
for i = 1, rules do
  local key = KEYS[i]
  local limit = tonumber(ARGV[2 * i + 1])
  local expiry = tonumber(ARGV[2 * i + 2])
  local since = now - expiry
  local allowed = 1
  local last = redis.call('lindex', key, limit - 1)
  if last and tonumber(last) >= since then
    allowed = 0
  else
    redis.call('lpush', key, ARGV[1])
    redis.call('ltrim', key, 0, limit - 1)
    redis.call('expire', key, expiry)
  end
  local low, high, index = 0, redis.call('llen', key) - 1, -1
  while low <= high do
    local mid = math.floor((low + high) / 2)
    local value = tonumber(redis.call('lindex', key, mid))
    if value and value >= since then
      index = mid
      low = mid + 1
    else
      high = mid - 1
    end
  end
  local oldest = ARGV[1]
  if index >= 0 then oldest = redis.call('lindex', key, index) end
  table.insert(out, allowed)
  table.insert(out, index + 1)
  table.insert(out, oldest)
  if allowed == 0 then break end
end
if #KEYS > rules then
  table.insert(out, redis.call('get', KEYS[rules + 1]))
end
return out
"""


NOT_READ = object()  # Decision.prefetched when no key was read along with the count


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
    prefetched: object = NOT_READ

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
    def __init__(
        self, settings: Settings, redis: RedisService, prefetch: Mapping[str, str] | None = None
    ) -> None:
        self.enabled = settings.RATE_LIMIT_ENABLED
        self.prefix = settings.API_PREFIX.rstrip("/")
        self.default = Rule("default", parse(settings.RATE_LIMIT_DEFAULT))
        self.write = Rule("write", parse(settings.RATE_LIMIT_WRITE))
        self.login = Rule("login", parse(settings.RATE_LIMIT_LOGIN))
        self.register = Rule("register", parse(settings.RATE_LIMIT_REGISTER))
        self.redis = redis
        self._memory = MovingWindowRateLimiter(MemoryStorage())
        self._script: AsyncScript | None = None
        if redis.client is not None:
            self._script = redis.client.register_script(MOVING_WINDOW_SCRIPT)
        self.backend: Backend = "redis" if self._script else "memory"
        self.prefetch = {self.prefix + path: key for path, key in (prefetch or {}).items()}

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

    def prefetch_key(self, method: str, path: str) -> str | None:
        """The cache key to read along with the count, for the cached GET routes."""
        return self.prefetch.get(path) if method == "GET" else None

    async def check(
        self, rules: list[Rule], client_key: str, read_key: str | None = None
    ) -> Decision:
        """Count one hit against each rule until one refuses; the tightest rule is reported.

        With `read_key`, the decision also carries that key's value as Redis held it
        (`prefetched`, bytes or None); it stays NOT_READ when Redis was not reached.
        """
        if self._script is not None:
            script = self._script
            try:
                decision = await self.redis.run(
                    lambda client: _evaluate_in_redis(client, script, rules, client_key, read_key)
                )
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


async def _evaluate_in_redis(
    client: Redis,
    script: AsyncScript,
    rules: list[Rule],
    client_key: str,
    read_key: str | None = None,
) -> Decision:
    now = time.time()
    keys = [f"{KEY_PREFIX}:{rule.item.key_for(rule.name, client_key)}" for rule in rules]
    args: list[float | int] = [now, len(rules)]
    for rule in rules:
        args += [rule.item.amount, rule.item.get_expiry()]
    if read_key is not None:
        keys.append(read_key)
    flat = await script(keys=keys, args=args, client=client)
    counted = len(flat) - 1 if read_key is not None else len(flat)
    decisions = [
        _decision(rule, bool(int(flat[i])), int(flat[i + 1]), float(flat[i + 2]), now)
        for rule, i in zip(rules, range(0, counted, 3), strict=False)
    ]
    decision = _tightest(decisions)
    if read_key is None:
        return decision
    return replace(decision, prefetched=flat[-1])


def _decision(rule: Rule, allowed: bool, hits: int, oldest: float, now: float) -> Decision:
    return Decision(
        allowed=allowed,
        limit=rule.item.amount,
        remaining=max(rule.item.amount - hits, 0),
        reset_after=max(math.ceil(oldest + rule.item.get_expiry() - now), 0),
    )


def _tightest(decisions: list[Decision]) -> Decision:
    """The refusal when there is one (it is the last), else the rule with the fewest left."""
    if not decisions[-1].allowed:
        return decisions[-1]
    return min(decisions, key=lambda d: d.remaining)


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
