"""Hot reads run straight on an asyncpg connection: the request's own read connection, or the
one under a session.

The statements stay SQLAlchemy Core (built in the repositories); each is compiled once for the
asyncpg dialect (`$n` placeholders) and then sent with asyncpg's own `fetch`, which keeps a
prepared statement per SQL text on the connection. That skips, per execution, SQLAlchemy's
compiled-cache lookup, execution context, result processing and two greenlet hops. It is used
only for SELECTs whose columns need no result processing (text, integers, booleans,
timestamps, text arrays); writes and ORM loads keep going through the session.

GET routes that only read this way take a `ReadConnection`: a pooled connection checked out
for the request with no ORM session around it (no Session, no SessionTransaction, no
AsyncConnection, no commit: ~85 us of CPU per request less). Anywhere else the connection is
the session's, so such a read joins the session's transaction when it has one. Connection-level
failures invalidate the pooled connection, as SQLAlchemy would.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ClauseElement

from app.core.error_handlers import DATA_ERROR_MESSAGE, ValidationFailedError

_DIALECT = PGDialect_asyncpg()  # type: ignore[no-untyped-call]
# Errors after which the connection cannot be trusted any more.
_BROKEN_CONNECTION = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    ConnectionError,
    OSError,
    TimeoutError,
)


class Record(asyncpg.Record):  # type: ignore[misc]
    """An asyncpg record whose columns also read as attributes, like SQLAlchemy's `Row`."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass(slots=True)
class ReadConnection:
    """A pooled asyncpg connection held for one request's reads, outside any ORM session."""

    driver: Any  # asyncpg.Connection
    invalidate: Callable[[], Awaitable[None]]  # drop it from the pool: it cannot be trusted
    # On a replica: rebinds this to a primary connection, so that a read the replica failed
    # is run again there, once. Each read is one autocommit SELECT: re-running it is safe.
    fallback: Callable[[ReadConnection], Awaitable[None]] | None = None


ReadSource = AsyncSession | ReadConnection


@dataclass(frozen=True, slots=True)
class CompiledRead:
    sql: str
    names: tuple[str, ...]

    @classmethod
    def of(cls, statement: ClauseElement) -> CompiledRead:
        compiled: Any = statement.compile(dialect=_DIALECT)
        return cls(str(compiled), tuple(compiled.positiontup or ()))

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        return [params[name] for name in self.names]


async def fetch(
    source: ReadSource, statement: CompiledRead, params: Mapping[str, Any]
) -> Sequence[Record]:
    driver: Any
    invalidate: Callable[[], Awaitable[None]]
    if isinstance(source, ReadConnection):
        driver, invalidate = source.driver, source.invalidate
    else:
        connection = await source.connection()
        driver = connection.sync_connection.connection.driver_connection  # type: ignore[union-attr]
        invalidate = connection.invalidate
    try:
        rows: list[Record] = await driver.fetch(
            statement.sql, *statement.arguments(params), record_class=Record
        )
    except (asyncpg.exceptions._base.DataError, asyncpg.DataError) as error:
        # A value the driver cannot encode or Postgres cannot store (SQLSTATE class 22): the
        # request's fault, and the connection is fine. Validation normally stops these first.
        raise ValidationFailedError(DATA_ERROR_MESSAGE, code="invalid_value") from error
    except _BROKEN_CONNECTION:
        await invalidate()
        if isinstance(source, ReadConnection) and source.fallback is not None:
            return await _again_on_primary(source, statement, params)
        raise
    except asyncpg.SerializationError:
        # On a hot standby: "canceling statement due to conflict with recovery".
        if isinstance(source, ReadConnection) and source.fallback is not None:
            return await _again_on_primary(source, statement, params)
        raise
    return rows


async def _again_on_primary(
    source: ReadConnection, statement: CompiledRead, params: Mapping[str, Any]
) -> Sequence[Record]:
    fallback, source.fallback = source.fallback, None
    assert fallback is not None  # nosec B101 # set by the caller
    await fallback(source)
    return await fetch(source, statement, params)


async def fetch_one(
    source: ReadSource, statement: CompiledRead, params: Mapping[str, Any]
) -> Record | None:
    rows = await fetch(source, statement, params)
    return rows[0] if rows else None
