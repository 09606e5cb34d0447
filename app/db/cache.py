"""Cache-aside helpers: orjson payloads in Redis with a TTL and explicit invalidation.

A cache failure is never a request failure: reads fall through to the loader (Postgres) and
writes are skipped, so the API serves the same answers with Redis down, only slower. Reads are
idempotent, so a transient Redis error gets a quick retry; an open breaker gets none.

Every read is counted in `cache_requests_total{cache,result}` (hit, miss, or error when Redis
failed), under the name its caller gives: a fixed word per kind of entry, never the key, so the
label set stays bounded. The instruments are handed in by the app (db does not import the
observability package).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.logging_config import get_logger
from app.db.redis import RedisCommandFailedError, RedisService, RedisUnavailableError
from app.resilience.retry import run_with_retry

log = get_logger(__name__)

KEY_PREFIX = "conduit:v1:"


def cache_key(*parts: str) -> str:
    return KEY_PREFIX + ":".join(parts)


class CacheInstruments:
    """The cache's counters, with `cache_requests_total`'s children looked up once per label
    pair (`labels()` takes a lock and builds a key on every call)."""

    def __init__(self, requests: Counter | None = None, retries: Counter | None = None) -> None:
        self.requests = requests
        self.retries = retries
        self._children: dict[tuple[str, str], Any] = {}

    def count(self, cache: str, result: str) -> None:
        if self.requests is None:
            return
        child = self._children.get((cache, result))
        if child is None:
            child = self._children[(cache, result)] = self.requests.labels(cache, result)
        child.inc()


class Cache:
    def __init__(
        self,
        redis: RedisService,
        ttl_seconds: int,
        prefetched: Mapping[str, Any] | None = None,
        instruments: CacheInstruments | None = None,
        redelete_after: float | None = None,
        delayed: set[asyncio.Task[None]] | None = None,
    ) -> None:
        self.redis = redis
        self.ttl = ttl_seconds
        self.prefetched = prefetched
        self.instruments = instruments or CacheInstruments()
        # With read replicas: a reader served by a replica that has not replayed a write yet
        # can put the old value back after its invalidation. Deleting once more when every
        # replica allowed to serve has it (the read-your-writes window) bounds a stale entry
        # to that window instead of the TTL. See docs/read-replicas.md.
        self.redelete_after = redelete_after
        # The second deletes still waiting (shared by the per-request copies), cancelled at
        # shutdown so none runs against a closed client.
        self.delayed: set[asyncio.Task[None]] = set() if delayed is None else delayed

    def with_prefetched(self, prefetched: Mapping[str, Any]) -> Cache:
        """This cache for one request, answering `get` for keys already read from Redis."""
        return Cache(
            self.redis, self.ttl, prefetched, self.instruments, self.redelete_after, self.delayed
        )

    def cancel_delayed_deletes(self) -> None:
        for task in self.delayed:
            task.cancel()

    async def get(self, key: str, *, name: str) -> Any | None:
        raw = await self.get_raw(key, name=name)
        return orjson.loads(raw) if raw is not None else None

    async def get_raw(self, key: str, *, name: str) -> bytes | None:
        """The stored JSON bytes as they are (for entries that are a response body already).
        `name` is the kind of entry, the `cache` label of the read's count."""
        if self.prefetched is not None and key in self.prefetched:
            prefetched: bytes | None = self.prefetched[key]
            self.instruments.count(name, "miss" if prefetched is None else "hit")
            return prefetched
        if not self.redis.enabled:
            return None
        try:
            raw = await run_with_retry(
                lambda: self.redis.execute("GET", key),
                (RedisCommandFailedError,),
                attempts=2,
                deadline=0.5,
                operation="cache_get",
                retries=self.instruments.retries,
            )
        except RedisUnavailableError:
            self.instruments.count(name, "error")
            return None
        found = raw if isinstance(raw, bytes) else None
        self.instruments.count(name, "miss" if found is None else "hit")
        return found

    async def set(self, key: str, value: Any, ttl: int | None = None) -> None:
        await self.set_raw(key, orjson.dumps(value), ttl)

    async def set_raw(self, key: str, raw: bytes, ttl: int | None = None) -> None:
        """Store JSON bytes as they are (a response body, read back with `get_raw`)."""
        if not self.redis.enabled:
            return
        try:
            await self.redis.execute("SET", key, raw, "EX", ttl or self.ttl)
        except RedisUnavailableError:
            log.debug("cache_write_skipped", key=key)

    async def add(self, key: str, raw: bytes, ttl: int | None = None) -> bytes | None:
        """Store `raw` unless `key` exists; the value the key holds afterwards (None: Redis
        unreachable). Read from Redis, never from what was prefetched."""
        if not self.redis.enabled:
            return None
        try:
            stored = await self.redis.execute("SET", key, raw, "NX", "EX", ttl or self.ttl)
            if stored is not None:
                return raw
            current = await self.redis.execute("GET", key)
        except RedisUnavailableError:
            return None
        return current if isinstance(current, bytes) else None

    async def generation(self, key: str, *, name: str) -> bytes | None:
        """The generation token under `key` (a random word that entries depending on it carry
        or are named by; dropping the key retires them all at once), starting one when there is
        none: SET NX, so concurrent starters agree on one. None without Redis."""
        current = await self.get_raw(key, name=name)
        if current is None:
            current = await self.add(key, secrets.token_hex(8).encode())
        return current

    async def delete(self, *keys: str) -> None:
        if not self.redis.enabled or not keys:
            return
        if self.redelete_after is not None:
            delete_again_later(self, keys, self.redelete_after)
        try:
            await self.redis.execute("DEL", *keys)
        except RedisUnavailableError:
            # The TTL bounds how long a stale entry can outlive a write made while Redis was down.
            log.warning("cache_invalidation_skipped", keys=list(keys))

    async def get_or_load(
        self, key: str, loader: Callable[[], Awaitable[Any]], *, name: str, ttl: int | None = None
    ) -> Any:
        cached = await self.get(key, name=name)
        if cached is not None:
            return cached
        value = await loader()
        if value is not None:
            await self.set(key, value, ttl)
        return value


def delete_again_later(cache: Cache, keys: tuple[str, ...], delay: float) -> None:
    async def again() -> None:
        await asyncio.sleep(delay)
        await Cache(cache.redis, cache.ttl, instruments=cache.instruments).delete(*keys)

    task = asyncio.get_running_loop().create_task(again())
    cache.delayed.add(task)  # a strong reference until it is done
    task.add_done_callback(cache.delayed.discard)


_PENDING = "cache_invalidations"


def invalidate_after_commit(session: AsyncSession, cache: Cache, *keys: str) -> None:
    """Drop `keys` once the session's transaction has committed.

    Invalidating before the commit would let a concurrent read put the old value back between
    the delete and the commit; after a rollback nothing changed, so nothing is dropped.
    """
    session.info.setdefault(_PENDING, []).append((cache, keys))


async def run_pending_invalidations(session: AsyncSession) -> None:
    pending: list[tuple[Cache, tuple[str, ...]]] = session.info.pop(_PENDING, [])
    for cache, keys in pending:
        await cache.delete(*keys)
