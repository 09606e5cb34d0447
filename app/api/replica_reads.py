"""Which server a GET's reads go to when replicas are configured, and the way back to the primary.

- A replica when one is usable (`ReplicaSet.pick`, no I/O) and the reader is anonymous or has
  not written within the read-your-writes window (`RecentWriters`, one Redis EXISTS, asked only
  when a replica was picked and a token was sent).
- The primary otherwise, and when taking a replica connection fails (dead replica, open breaker,
  dry pool): that failure never reaches the client.
- A read that fails on the replica mid-request (connection lost, or cancelled by a recovery
  conflict) runs again on a primary connection (`ReadConnection.fallback`): every read here is
  one autocommit SELECT, so running it again is safe. Only when the primary fails as well does
  the request get the 503 envelope.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.util import greenlet_spawn

from app.api.state import Resources
from app.core.error_handlers import DatabaseUnavailableError
from app.core.logging_config import get_logger
from app.db.database_production import is_database_unavailable
from app.db.recent_writes import writer_key
from app.db.replicas import Replica, ReplicaSet
from app.repositories.driver import ReadConnection
from app.resilience.circuit_breaker import CircuitOpenError

log = get_logger(__name__)


def _invalidator(pooled: Any) -> Callable[[], Awaitable[None]]:
    async def invalidate() -> None:
        await greenlet_spawn(pooled.invalidate)

    return invalidate


async def choose_replica(
    resources: Resources,
    replicas: ReplicaSet,
    viewer_id: int | None,
    prefetched: Mapping[str, object] | None = None,
) -> Replica | None:
    """`prefetched`: what the rate limiter's script read with its count, which for a signed-in
    reader includes their read-your-writes key (`app.main.reads_with_replicas`): then no round
    trip of its own."""
    replica = replicas.pick()
    if replica is None or viewer_id is None:
        return replica
    if prefetched is not None:
        key = writer_key(viewer_id)
        if key in prefetched:
            return None if prefetched[key] is not None else replica
    writers = resources.recent_writers
    if writers is None or await writers.wrote_recently(viewer_id):
        return None
    return replica


async def checkout_primary(resources: Resources) -> Any:
    """A pooled primary connection, taken through the database breaker: once Postgres is known
    down, the request gets its 503 at once instead of waiting out the connect timeout."""
    try:
        return await resources.breakers["database"].call(resources.engine.raw_connection)
    except Exception as exc:
        if isinstance(exc, CircuitOpenError) or is_database_unavailable(exc):
            raise DatabaseUnavailableError() from exc
        raise


@asynccontextmanager
async def open_replica_reads(
    resources: Resources,
    replicas: ReplicaSet,
    viewer_id: int | None,
    prefetched: Mapping[str, object] | None = None,
) -> AsyncIterator[ReadConnection]:
    held: list[Any] = []  # pooled connections to give back, replica's and primary's

    async def primary_connection() -> Any:
        pooled = await checkout_primary(resources)
        held.append(pooled)
        return pooled

    async def move_to_primary(connection: ReadConnection) -> None:
        log.warning("replica_read_failed", replica=replica.name if replica else None)
        pooled = await primary_connection()
        connection.driver, connection.invalidate = pooled.driver_connection, _invalidator(pooled)

    replica = await choose_replica(resources, replicas, viewer_id, prefetched)
    connection: ReadConnection | None = None
    if replica is not None:
        try:
            pooled = await replica.breaker.call(replica.engine.raw_connection)
        except Exception as error:
            log.warning("replica_checkout_failed", replica=replica.name, error=type(error).__name__)
        else:
            held.append(pooled)
            connection = ReadConnection(
                pooled.driver_connection, _invalidator(pooled), move_to_primary
            )
    try:
        if connection is None:
            pooled = await primary_connection()
            connection = ReadConnection(pooled.driver_connection, _invalidator(pooled))
        yield connection
    except Exception as exc:
        if is_database_unavailable(exc):
            raise DatabaseUnavailableError() from exc
        raise
    finally:
        for pooled in held:
            await greenlet_spawn(pooled.close)  # back to its pool (a no-op when invalidated)
