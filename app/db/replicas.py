"""Streaming replicas for GET reads: one small pool and one circuit breaker per replica, and a
lag measured in the background (never per request).

Each worker measures every replica once per DATABASE_REPLICA_CHECK_SECONDS:
- the primary's flushed WAL position first (`pg_current_wal_flush_lsn()`: what a replica can
  have; a record inserted but not flushed, such as the periodic running-transactions record
  on an idle primary, may wait seconds for a flush and would make every replica look behind),
  then, on each replica, `pg_last_wal_replay_lsn()` and `pg_last_xact_replay_timestamp()`;
- a replica that has replayed at least that position is caught up (lag 0). The
  replay timestamp alone would not do: it is the commit time of the last transaction replayed,
  so on an idle primary it stops moving and an idle-but-current replica would look ever later;
- otherwise the lag is `clock_timestamp() - pg_last_xact_replay_timestamp()` on the replica
  (the time since the newest commit it shows). NULL (nothing replayed since it started) counts
  as lagging until it catches up;
- when the primary cannot be asked, `pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()`
  (replayed all it received) stands in for "caught up".

A replica serves reads when its last check succeeded, it is still in recovery (a promoted
replica has left our primary's timeline), its lag is within DATABASE_REPLICA_MAX_LAG_SECONDS
and its breaker is closed. The checks go through the breaker, so a dead replica opens it
without any request paying for the discovery, and the first check after the cool-down is the
breaker's trial call.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.core.logging_config import get_logger
from app.db.database_production import create_engine

if TYPE_CHECKING:
    from app.resilience.circuit_breaker import CircuitBreaker

log = get_logger(__name__)

# A request that finds its replica's pool dry waits this long, then reads from the primary:
# not DB_POOL_TIMEOUT's seconds, since another server can answer at once.
REPLICA_POOL_TIMEOUT_SECONDS = 0.25
PRIMARY_POSITION = text("SELECT pg_current_wal_flush_lsn()::text")
REPLICA_STATE = text(
    """
    SELECT pg_is_in_recovery() AS in_recovery,
           COALESCE(
               pg_last_wal_replay_lsn() >= CAST(CAST(:primary_lsn AS text) AS pg_lsn),
               pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn(),
               false
           ) AS caught_up,
           EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8
               AS behind_seconds
    """
)
AUTOCOMMIT: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"}


@dataclass(slots=True)
class Replica:
    name: str  # "replica-<n>", also its breaker's name
    address: str  # host:port/database, no credentials
    engine: AsyncEngine
    breaker: CircuitBreaker
    lag_seconds: float | None = None  # None: not measured, or nothing replayed yet
    error: str | None = None  # why the last check failed, or why the replica is unusable
    usable: bool = False

    def status(self, max_lag: float) -> dict[str, Any]:
        state = "ok" if self.usable else ("lagging" if self.error is None else "down")
        return {
            "name": self.name,
            "address": self.address,
            "status": state,
            "lag_seconds": None if self.lag_seconds is None else round(self.lag_seconds, 3),
            "max_lag_seconds": max_lag,
            "breaker": self.breaker.state.value,
            "error": self.error,
        }


def replica_address(url: str) -> str:
    parsed = make_url(url)
    return f"{parsed.host}:{parsed.port or 5432}/{parsed.database}"


class ReplicaSet:
    def __init__(
        self,
        replicas: list[Replica],
        primary: AsyncEngine,
        *,
        max_lag: float,
        interval: float,
        on_checked: Callable[[Replica], None] | None = None,
    ) -> None:
        self.replicas = replicas
        self.on_checked = on_checked  # e.g. the lag gauges (db does not import observability)
        self.primary = primary
        self.max_lag = max_lag
        self.interval = interval
        # Each check's bound: a hung server must not stall the loop, and opening a connection
        # (TCP, authentication, asyncpg's type introspection) must fit.
        self.timeout = max(interval, 1.0)
        self._usable: tuple[Replica, ...] = ()
        self._turns = itertools.count()

    def pick(self) -> Replica | None:
        """A replica to read from (round robin over the usable ones), or None for the primary.

        No I/O: decided from the last background check and the breakers' states.
        """
        usable = self._usable
        if not usable:
            return None
        for _ in range(len(usable)):
            replica = usable[next(self._turns) % len(usable)]
            if replica.breaker.state.value == "closed":
                return replica
        return None

    async def refresh(self) -> None:
        primary_lsn = await self._primary_position()
        await asyncio.gather(*(self._check(replica, primary_lsn) for replica in self.replicas))
        self._usable = tuple(replica for replica in self.replicas if replica.usable)

    async def run(self) -> None:
        """Refresh forever (a lifespan task; cancelled at shutdown)."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.refresh()
            except Exception as error:  # never let the loop die: stale state fails safe below
                log.error("replica_refresh_failed", error=type(error).__name__)
                self._usable = ()

    async def _primary_position(self) -> str | None:
        try:
            async with asyncio.timeout(self.timeout):
                async with self.primary.connect() as connection:
                    conn = await connection.execution_options(**AUTOCOMMIT)
                    return str((await conn.execute(PRIMARY_POSITION)).scalar_one())
        except Exception:
            return None  # each replica then compares what it received with what it replayed

    async def _check(self, replica: Replica, primary_lsn: str | None) -> None:
        was_usable = replica.usable
        try:
            row = await replica.breaker.call(lambda: self._probe(replica, primary_lsn))
        except Exception as error:
            replica.usable, replica.lag_seconds = False, None
            replica.error = type(error).__name__
        else:
            replica.lag_seconds = 0.0 if row.caught_up else row.behind_seconds
            replica.error = None if row.in_recovery else "not_in_recovery"
            replica.usable = (
                row.in_recovery
                and replica.lag_seconds is not None
                and replica.lag_seconds <= self.max_lag
            )
        if replica.usable != was_usable:
            event = "replica_usable" if replica.usable else "replica_skipped"
            log.info(event, replica=replica.name, lag=replica.lag_seconds, error=replica.error)
        if self.on_checked is not None:
            self.on_checked(replica)

    async def _probe(self, replica: Replica, primary_lsn: str | None) -> Any:
        async with asyncio.timeout(self.timeout):
            async with replica.engine.connect() as connection:
                conn = await connection.execution_options(**AUTOCOMMIT)
                result = await conn.execute(REPLICA_STATE, {"primary_lsn": primary_lsn})
                return result.one()

    def status(self) -> list[dict[str, Any]]:
        return [replica.status(self.max_lag) for replica in self.replicas]

    async def dispose(self) -> None:
        await asyncio.gather(*(replica.engine.dispose() for replica in self.replicas))


def build_replica_set(
    settings: Settings,
    primary: AsyncEngine,
    breaker_for: Callable[[str], CircuitBreaker],
    on_checked: Callable[[Replica], None] | None = None,
) -> ReplicaSet | None:
    """One small engine and one breaker per DATABASE_REPLICA_URLS entry; None when empty."""
    if not settings.DATABASE_REPLICA_URLS:
        return None
    replicas = []
    for index, url in enumerate(settings.DATABASE_REPLICA_URLS):
        name = f"replica-{index}"
        engine = create_engine(
            settings,
            url=url,
            pool_size=settings.DATABASE_REPLICA_POOL_SIZE,
            max_overflow=settings.DATABASE_REPLICA_MAX_OVERFLOW,
            pool_timeout=min(settings.DB_POOL_TIMEOUT, REPLICA_POOL_TIMEOUT_SECONDS),
        )
        replicas.append(Replica(name, replica_address(url), engine, breaker_for(name)))
    return ReplicaSet(
        replicas,
        primary,
        max_lag=settings.DATABASE_REPLICA_MAX_LAG_SECONDS,
        interval=settings.DATABASE_REPLICA_CHECK_SECONDS,
        on_checked=on_checked,
    )
