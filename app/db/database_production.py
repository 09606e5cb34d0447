"""The pooled async engine on asyncpg, its session factory, and start-up waiting.

Pool and timeout figures come from settings. Event listeners feed the Prometheus counters and
log invalidations; pinging connections that sat idle (see `_attach_idle_ping`) and
`pool_recycle` let the app recover by itself after a Postgres restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import asyncpg
from prometheus_client import Counter
from sqlalchemy import event, exc, text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry
from tenacity import AsyncRetrying, RetryCallState, stop_after_delay, wait_exponential_jitter

from app.core.config import Settings
from app.core.logging_config import get_logger
from app.observability.metrics import AppMetrics

log = get_logger(__name__)

# Errors meaning "the database cannot be reached right now", as opposed to a bug in a query.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    exc.TimeoutError,  # no pooled connection within DB_POOL_TIMEOUT
    exc.InterfaceError,
    exc.OperationalError,
    ConnectionError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
)


# What taking a connection from the pool raises when Postgres is down or hangs: the failures
# the "database" circuit breaker counts (query errors never reach it). A dry pool
# (exc.TimeoutError) is left out on purpose: it says this worker is busy, not that Postgres is
# gone, and opening the breaker on it would turn a burst of traffic into seconds of outage.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = tuple(
    error
    for error in (*UNAVAILABLE_ERRORS, exc.DBAPIError, OSError)
    if error is not exc.TimeoutError
)


def is_database_unavailable(error: BaseException) -> bool:
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, UNAVAILABLE_ERRORS)


def create_engine(
    settings: Settings,
    metrics: AppMetrics | None = None,
    *,
    url: str | None = None,
    pool_size: int | None = None,
    max_overflow: int | None = None,
    pool_timeout: float | None = None,
) -> AsyncEngine:
    """The primary's engine; with `url` and the pool's figures, a replica's."""
    engine = create_async_engine(
        url or settings.DATABASE_URL,
        pool_size=pool_size or settings.DB_POOL_SIZE,
        max_overflow=settings.DB_MAX_OVERFLOW if max_overflow is None else max_overflow,
        pool_timeout=settings.DB_POOL_TIMEOUT if pool_timeout is None else pool_timeout,
        pool_recycle=settings.DB_POOL_RECYCLE,
        echo=settings.DB_ECHO,
        connect_args=_connect_args(settings),
    )
    _attach_idle_ping(engine)
    if metrics is not None:
        _attach_pool_listeners(engine, metrics)
    return engine


def _connect_args(settings: Settings) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "timeout": settings.DB_CONNECT_TIMEOUT,
        # Client-side guard a little above the server's statement_timeout.
        "command_timeout": settings.DB_STATEMENT_TIMEOUT_MS / 1000 + 1,
        "server_settings": {
            "application_name": settings.APP_NAME,
            "statement_timeout": str(settings.DB_STATEMENT_TIMEOUT_MS),
            # Every statement the app prepares is planned once per connection: on a large set,
            # `auto` prices a generic plan's unknown LIMIT at a tenth of the table and so plans
            # each execution anew, ~0.2 ms of Postgres CPU per read at 1M articles. Without JIT:
            # that price would otherwise compile the plan on every execution (~110 ms).
            "plan_cache_mode": settings.DB_PLAN_CACHE_MODE,
            "jit": "on" if settings.DB_JIT else "off",
        },
    }
    if settings.DB_PGBOUNCER_TRANSACTION_MODE:
        arguments.update(PGBOUNCER_TRANSACTION_MODE)
        # PgBouncer refuses startup parameters it does not know: set statement_timeout, jit and
        # plan_cache_mode on the role instead (docs/read-replicas.md, "PgBouncer").
        arguments["server_settings"] = {"application_name": settings.APP_NAME}
    return arguments


# Behind PgBouncer in transaction mode (before 1.21, or without max_prepared_statements), two
# consecutive messages of a client may reach different server connections, so nothing may stay
# prepared on a server: no statement cache in asyncpg or in SQLAlchemy, and SQLAlchemy's
# statements unnamed (""). asyncpg then sends each unnamed statement's Parse again with its
# Bind and Execute, in one round trip, so a statement runs where it was parsed, even outside a
# transaction, and nothing is left behind. Named statements (asyncpg's counter, or SQLAlchemy's
# documented uuid names) broke here: "does not exist" errors, or, unique names, ~0.35
# statements leaked per request on the servers. See docs/read-replicas.md ("PgBouncer").
PGBOUNCER_TRANSACTION_MODE: dict[str, Any] = {
    "statement_cache_size": 0,
    "prepared_statement_cache_size": 0,
    "prepared_statement_name_func": lambda: "",
}


# A connection back in the pool for less than this is taken as alive without a ping.
PING_IF_IDLE_SECONDS = 1.0
_LAST_USED = "conduit_last_used"


def _attach_idle_ping(engine: AsyncEngine) -> None:
    """`pool_pre_ping`, but only for connections that sat idle.

    SQLAlchemy's pre-ping costs three round trips on asyncpg (BEGIN, ";", ROLLBACK) on every
    checkout: more than the query of a typical request. Under load connections go back and
    forth within milliseconds and are known alive; after an outage every pooled connection
    has been idle longer than the threshold, so each one is pinged, found dead and replaced
    before a request sees it (the pool retries the checkout with a fresh connection).
    """
    pool = engine.sync_engine.pool
    dialect = engine.sync_engine.dialect

    @event.listens_for(pool, "connect")
    @event.listens_for(pool, "checkin")
    def _mark_used(_conn: Any, record: ConnectionPoolEntry | None) -> None:
        if record is not None:
            record.info[_LAST_USED] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        last_used = record.info.get(_LAST_USED)
        if last_used is not None and time.monotonic() - last_used < PING_IF_IDLE_SECONDS:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise exc.DisconnectionError(f"idle connection failed its ping: {error}") from error
        record.info[_LAST_USED] = time.monotonic()


def _attach_pool_listeners(engine: AsyncEngine, metrics: AppMetrics) -> None:
    pool = engine.sync_engine.pool

    @event.listens_for(pool, "connect")
    def _on_connect(*_: Any) -> None:
        metrics.db_connections_opened.inc()

    @event.listens_for(pool, "checkout")
    def _on_checkout(*_: Any) -> None:
        metrics.db_checkouts.inc()

    @event.listens_for(pool, "invalidate")
    def _on_invalidate(
        _conn: Any, _record: ConnectionPoolEntry, error: BaseException | None
    ) -> None:
        metrics.db_invalidated.inc()
        log.warning("db_connection_invalidated", error=type(error).__name__ if error else None)


def pool_status(engine: AsyncEngine) -> dict[str, int]:
    pool: Any = engine.sync_engine.pool
    return {
        "size": int(pool.size()),
        "checked_out": int(pool.checkedout()),
        "idle": int(pool.checkedin()),
        "overflow": max(int(pool.overflow()), 0),
    }


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


def _wait_logger(retries: Counter | None) -> Callable[[RetryCallState], None]:
    def log_wait(state: RetryCallState) -> None:
        if retries is not None:
            retries.labels("database_connect").inc()
        _log_wait(state)

    return log_wait


def _log_wait(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.warning(
        "database_not_ready",
        attempt=state.attempt_number,
        retry_in_seconds=round(state.next_action.sleep, 2) if state.next_action else None,
        error=type(error).__name__ if error else None,
    )


async def wait_for_database(
    engine: AsyncEngine, deadline: float, retries: Counter | None = None
) -> bool:
    """Wait for Postgres with bounded exponential backoff; False when it never answered.

    The app serves either way: readiness reports the database until it comes up.
    """
    try:
        async for attempt in AsyncRetrying(
            stop=stop_after_delay(deadline),
            wait=wait_exponential_jitter(multiplier=0.2, max=5.0, jitter=0.2),
            before_sleep=_wait_logger(retries),
            reraise=True,
        ):
            with attempt:
                await asyncio.wait_for(ping(engine), timeout=max(deadline, 1.0))
    except Exception as error:
        log.error("database_unreachable_at_startup", error=type(error).__name__)
        return False
    log.info("database_ready")
    return True
