"""Per-client rate limits: sliding window counters in Redis, shared by every worker and replica,
with an in-process fallback while Redis is away.

Rules come from settings: RATE_LIMIT_DEFAULT on every API route, RATE_LIMIT_WRITE on top of it
for POST/PUT/PATCH/DELETE, RATE_LIMIT_LOGIN and RATE_LIMIT_REGISTER on top of those for the two
credential endpoints. Each rule counts separately (its name is part of the key).
RATE_LIMIT_LOGIN_ACCOUNT counts failed logins per account rather than per client; the login
service asks it (`peek`) and counts it through `app.resilience.login_throttle`.

The algorithm is the sliding window counter (as Cloudflare and the `limits` library call it):
per client and rule, one counter for the current fixed window and one for the previous; the
previous one is weighted by how much of it still overlaps the sliding window ending now. That is
O(1) in time and memory per client, whatever the limit: a moving-window log keeps one entry per
hit, and a raised limit (say 10 million a minute) made every check walk a list of hundreds of
thousands of timestamps inside Redis. The estimate assumes the previous window's hits were
spread evenly; for a fresh client it is exact.

In Redis, one Lua script counts a request against all of its rules and returns their counters
in a single atomic round trip. For the GET routes that are answered from the cache (`prefetch`:
the cache key a GET of a path reads first, given whether the client is anonymous), the same
script also returns that key's value, so the route needs no second round trip; the route reads
it from `scope["state"]` through `app.api.deps.get_cache`. The value is read when the request is
counted, microseconds before the route would have read it, after any write that completed
before the request arrived.

Redis is reached through `RedisService.evalsha` (one pipelined connection per process, see
`app.db.redis_pipeline`), i.e. through the Redis circuit breaker shared with the cache: once the
breaker is open a request pays nothing for the dead Redis and is counted in process instead
(the same algorithm from the `limits` library; still answering 429, per process rather than
per fleet). The first Redis call that succeeds again switches back. Each switch is
logged once.

Each rule counted is recorded in `rate_limit_decisions_total{rule,outcome}` (allowed or
limited), when the app hands that counter in; rules after a refusal are not counted, so they
are not recorded either.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from prometheus_client import Counter
from redis.exceptions import RedisError

from app.core.config import Settings
from app.core.logging_config import get_logger
from app.db.redis import RedisService, RedisUnavailableError

log = get_logger(__name__)

Backend = Literal["redis", "memory"]
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
KEY_PREFIX = "conduit:v1:ratelimit"
PREFETCHED_STATE = "cache_prefetched"  # scope["state"] key: {cache key: raw value or None}

# KEYS: per rule, its previous window's counter then its current window's; then any keys to
# read. ARGV: the number of rules, then per rule: limit, weight of the previous window
# (the share of it the sliding window still covers), counter lifetime in seconds (two windows).
# Rules are counted in order until one refuses (later rules are then left untouched). Returns,
# per rule counted: allowed (1/0), previous count, current count (this hit included when
# allowed); then the value of each key to read, in order.
SLIDING_WINDOW_SCRIPT = """
local rules = tonumber(ARGV[1])
local out = {}
for i = 1, rules do
  local previous = tonumber(redis.call('get', KEYS[2 * i - 1])) or 0
  local current = tonumber(redis.call('get', KEYS[2 * i])) or 0
  local limit = tonumber(ARGV[3 * i - 1])
  local weight = tonumber(ARGV[3 * i])
  local allowed = 0
  if previous * weight + current + 1 <= limit then
    allowed = 1
    current = redis.call('incr', KEYS[2 * i])
    if current == 1 then redis.call('expire', KEYS[2 * i], ARGV[3 * i + 1]) end
  end
  table.insert(out, allowed)
  table.insert(out, previous)
  table.insert(out, current)
  if allowed == 0 then break end
end
for j = 2 * rules + 1, #KEYS do
  table.insert(out, redis.call('get', KEYS[j]))
end
return out
"""
# Redis' id of the script (EVALSHA): SHA-1 names it here, it protects nothing.
SLIDING_WINDOW_SHA = hashlib.sha1(SLIDING_WINDOW_SCRIPT.encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True, slots=True)
class Window:
    """Where `now` falls in a rule's fixed windows (period in seconds)."""

    index: int  # number of the current fixed window since the epoch
    elapsed: float  # seconds into it
    period: int

    @classmethod
    def at(cls, now: float, period: int) -> Window:
        index = int(now // period)
        return cls(index, now - index * period, period)

    @property
    def previous_weight(self) -> float:
        """The share of the previous window that the sliding window still covers."""
        return (self.period - self.elapsed) / self.period


def window_decision(
    limit: int, window: Window, allowed: bool, previous: int, current: int
) -> Decision:
    """Headers' figures from the counters (current includes this hit when it was allowed).

    `remaining` is how many more hits the estimate admits right now; `reset_after` is, when
    refused, the seconds until the estimate has room for one more hit, else the seconds until
    the current window closes.
    """
    weight = window.previous_weight
    estimate = previous * weight + current
    remaining = max(math.floor(limit - estimate + 1e-9), 0)
    to_window_end = window.period - window.elapsed
    if allowed:
        reset = to_window_end
    elif current + 1 > limit:
        # The current window alone is full: wait for it to become the previous one and for
        # enough of it to slide out: current * (1 - t / period) + 1 <= limit.
        reset = to_window_end + window.period * (1 - (limit - 1) / current)
    else:
        # The previous window's weight is in the way: previous * w' + current + 1 <= limit.
        needed_weight = (limit - 1 - current) / previous if previous else 1.0
        reset = window.period * (weight - needed_weight)
    return Decision(
        allowed=allowed,
        limit=limit,
        remaining=remaining,
        reset_after=max(math.ceil(reset - 1e-9), 0),
    )


NOT_READ = object()  # Decision.prefetched when no key was read along with the count


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    item: RateLimitItem
    # The Redis key around the client's part, built once rather than on every hit.
    _affixes: tuple[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        marker = "\0"
        before, _, after = f"{KEY_PREFIX}:{self.item.key_for(self.name, marker)}".partition(marker)
        object.__setattr__(self, "_affixes", (before, after))

    def redis_key(self, client_key: str) -> str:
        """`limits`' key for this rule and client (its `key_for`), under our prefix."""
        before, after = self._affixes
        return before + client_key + after


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_after: int  # seconds until the window frees a slot
    prefetched: object = NOT_READ  # else a tuple: the value of each key read, in order

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
        self,
        settings: Settings,
        redis: RedisService,
        prefetch: Callable[[str, str, bytes], tuple[str, ...]] | None = None,
        decisions: Counter | None = None,
    ) -> None:
        self.enabled = settings.RATE_LIMIT_ENABLED
        self.prefix = settings.API_PREFIX.rstrip("/")
        self.default = Rule("default", parse(settings.RATE_LIMIT_DEFAULT))
        self.write = Rule("write", parse(settings.RATE_LIMIT_WRITE))
        self.login = Rule("login", parse(settings.RATE_LIMIT_LOGIN))
        self.register = Rule("register", parse(settings.RATE_LIMIT_REGISTER))
        # Per account, not per client: counted and asked by app.resilience.login_throttle.
        self.login_account = Rule("login_account", parse(settings.RATE_LIMIT_LOGIN_ACCOUNT))
        self.redis = redis
        self._memory = SlidingWindowCounterRateLimiter(MemoryStorage())
        self.backend: Backend = "redis" if redis.enabled else "memory"
        self.prefetch = prefetch
        # Children looked up once: `labels()` takes a lock and builds a key on every call.
        self._outcomes: dict[tuple[str, bool], Any] = (
            {
                (rule.name, allowed): decisions.labels(
                    rule.name, "allowed" if allowed else "limited"
                )
                for rule in (
                    self.default,
                    self.write,
                    self.login,
                    self.register,
                    self.login_account,
                )
                for allowed in (True, False)
            }
            if decisions is not None
            else {}
        )

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

    def prefetch_keys(
        self, method: str, path: str, client: str, query: bytes = b""
    ) -> tuple[str, ...]:
        """The keys to read along with the count, for the GET routes that read some first
        (`client`: "user:<id>" for a valid token, else "ip:<address>"; `query`: the raw query
        string)."""
        if method != "GET" or self.prefetch is None:
            return ()
        return self.prefetch(path[len(self.prefix) :], client, query)

    async def check(
        self,
        rules: list[Rule],
        client_key: str,
        read_keys: tuple[str, ...] = (),
        *,
        record: bool = True,
    ) -> Decision:
        """Count one hit against each rule until one refuses; the tightest rule is reported.

        With `read_keys`, the decision also carries those keys' values as Redis held them
        (`prefetched`, a tuple of bytes or None); it stays NOT_READ when Redis was not reached.
        `record=False` leaves the decisions counter alone (a hit counted after `peek` decided).
        """
        if self.redis.enabled:
            try:
                decision, counted = await _evaluate_in_redis(
                    self.redis, rules, client_key, read_keys
                )
            except (RedisUnavailableError, RedisError) as exc:
                self._switch("memory", error=type(exc).__name__)
            else:
                self._switch("redis")
                if record:
                    self._record(rules, counted, decision.allowed)
                return decision
        decision, counted = await _evaluate(self._memory, rules, client_key)
        if record:
            self._record(rules, counted, decision.allowed)
        return decision

    async def peek(self, rule: Rule, client_key: str) -> Decision:
        """The decision one more hit would get now, without counting it (recorded like one).

        For limits counted after the fact (app.resilience.login_throttle: only failed logins
        count, but a locked account is refused before its password is checked).
        """
        if self.redis.enabled:
            try:
                decision = await _peek_in_redis(self.redis, rule, client_key)
            except (RedisUnavailableError, RedisError) as exc:
                self._switch("memory", error=type(exc).__name__)
            else:
                self._switch("redis")
                self._record([rule], 1, decision.allowed)
                return decision
        decision = await _peek(self._memory, rule, client_key)
        self._record([rule], 1, decision.allowed)
        return decision

    def _record(self, rules: list[Rule], counted: int, allowed: bool) -> None:
        """The first `counted` rules were applied; all allowed, or the last one refused."""
        if not self._outcomes:
            return
        for rule in rules[: counted - 1]:
            self._outcomes[rule.name, True].inc()
        self._outcomes[rules[counted - 1].name, allowed].inc()

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
    redis: RedisService,
    rules: list[Rule],
    client_key: str,
    read_keys: tuple[str, ...] = (),
) -> tuple[Decision, int]:
    """The decision and how many rules were counted (all, or up to the one that refused)."""
    now = time.time()
    keys: list[str] = []
    args: list[float | int] = [len(rules)]
    windows = []
    for rule in rules:
        period = rule.item.get_expiry()
        window = Window.at(now, period)
        base = rule.redis_key(client_key)
        keys += [f"{base}:{window.index - 1}", f"{base}:{window.index}"]
        args += [rule.item.amount, window.previous_weight, 2 * period]
        windows.append(window)
    keys += read_keys
    flat = cast(
        "list[Any]", await redis.evalsha(SLIDING_WINDOW_SCRIPT, SLIDING_WINDOW_SHA, keys, args)
    )
    counted = len(flat) - len(read_keys)
    decisions = [
        window_decision(
            rule.item.amount, window, bool(int(flat[i])), int(flat[i + 1]), int(flat[i + 2])
        )
        for rule, window, i in zip(rules, windows, range(0, counted, 3), strict=False)
    ]
    decision = _tightest(decisions)
    if not read_keys:
        return decision, len(decisions)
    return (
        Decision(  # not dataclasses.replace, which looks the fields up on every call
            decision.allowed,
            decision.limit,
            decision.remaining,
            decision.reset_after,
            tuple(flat[counted:]),
        ),
        len(decisions),
    )


async def _peek_in_redis(redis: RedisService, rule: Rule, client_key: str) -> Decision:
    """The script with a limit of 0 admits nothing, so it counts nothing and returns the
    counters; the decision is then taken against the rule's real limit."""
    period = rule.item.get_expiry()
    window = Window.at(time.time(), period)
    base = rule.redis_key(client_key)
    keys = [f"{base}:{window.index - 1}", f"{base}:{window.index}"]
    args: list[float | int] = [1, 0, window.previous_weight, 2 * period]
    flat = cast(
        "list[Any]", await redis.evalsha(SLIDING_WINDOW_SCRIPT, SLIDING_WINDOW_SHA, keys, args)
    )
    previous, current = int(flat[1]), int(flat[2])
    limit = rule.item.amount
    allowed = previous * window.previous_weight + current + 1 <= limit
    return window_decision(limit, window, allowed, previous, current)


async def _peek(limiter: SlidingWindowCounterRateLimiter, rule: Rule, key: str) -> Decision:
    allowed = await limiter.test(rule.item, rule.name, key)
    stats = await limiter.get_window_stats(rule.item, rule.name, key)
    return Decision(
        allowed=allowed,
        limit=rule.item.amount,
        remaining=max(stats.remaining, 0),
        reset_after=max(math.ceil(stats.reset_time - time.time()), 0),
    )


def _tightest(decisions: list[Decision]) -> Decision:
    """The refusal when there is one (it is the last), else the rule with the fewest left."""
    if not decisions[-1].allowed:
        return decisions[-1]
    return min(decisions, key=lambda d: d.remaining)


async def _evaluate(
    limiter: SlidingWindowCounterRateLimiter, rules: list[Rule], key: str
) -> tuple[Decision, int]:
    tightest: Decision | None = None
    for counted, rule in enumerate(rules, start=1):
        allowed = await limiter.hit(rule.item, rule.name, key)
        stats = await limiter.get_window_stats(rule.item, rule.name, key)
        decision = Decision(
            allowed=allowed,
            limit=rule.item.amount,
            remaining=max(stats.remaining, 0),
            reset_after=max(math.ceil(stats.reset_time - time.time()), 0),
        )
        if not allowed:
            return decision, counted
        if tightest is None or decision.remaining < tightest.remaining:
            tightest = decision
    assert tightest is not None  # nosec B101 # rules is never empty
    return tightest, len(rules)
