"""Request dependencies: resources from app.state, the DB session, settings, cache.

Every dependency is `async def`, even the ones that await nothing: FastAPI runs a plain `def`
dependency in the thread pool, a thread hand-off per dependency per request on the hot path.
Each one reads `app.state.resources` itself rather than depending on `get_resources`: every
layer of sub-dependencies costs FastAPI several microseconds to solve on every request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.util import greenlet_spawn

from app.api.replica_reads import checkout_primary, open_replica_reads
from app.api.state import Resources
from app.core.config import Settings
from app.core.error_handlers import DatabaseUnavailableError, UnauthorizedError
from app.core.logging_config import get_logger
from app.core.security import InvalidTokenError, decode_access_token, token_from_header
from app.db.cache import Cache, run_pending_invalidations
from app.db.database_production import is_database_unavailable
from app.models import User
from app.repositories import users as users_repo
from app.repositories.driver import ReadConnection
from app.resilience.circuit_breaker import CircuitOpenError
from app.resilience.rate_limit import PREFETCHED_STATE

log = get_logger(__name__)


def resources_of(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


async def get_resources(request: Request) -> Resources:
    return resources_of(request)


ResourcesDep = Annotated[Resources, Depends(get_resources)]


async def get_app_settings(request: Request) -> Settings:
    return resources_of(request).settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


async def get_cache(request: Request) -> Cache:
    """The cache, answering from what the rate limiter read along with its count, if anything."""
    cache = resources_of(request).cache
    prefetched = request.scope.get("state", {}).get(PREFETCHED_STATE)
    return cache if prefetched is None else cache.with_prefetched(prefetched)


CacheDep = Annotated[Cache, Depends(get_cache)]


# Safe methods only read. Under READ COMMITTED each statement of a transaction sees its own
# snapshot anyway, so for them the transaction buys nothing but BEGIN and COMMIT round trips.
READ_METHODS = frozenset({"GET", "HEAD"})
AUTOCOMMIT: dict[str, object] = {"isolation_level": "AUTOCOMMIT"}


@asynccontextmanager
async def open_session(resources: Resources, *, read_only: bool) -> AsyncIterator[AsyncSession]:
    """A session that commits when the block succeeded and rolls back when it raised.

    Read-only sessions run without a transaction (autocommit), unless the session is bound to
    a caller's connection (tests wrap each test in one) whose transaction it must join.
    """
    async with resources.session_factory() as session:
        autocommit = read_only and isinstance(session.bind, AsyncEngine)
        options = AUTOCOMMIT if autocommit else None
        try:
            # The connection is taken up front, through the database breaker: once Postgres is
            # known to be down or hanging, requests get their 503 at once instead of each one
            # waiting out the connect timeout and holding a pool slot meanwhile.
            await resources.breakers["database"].call(
                lambda: session.connection(execution_options=options)
            )
            yield session
            await session.commit()
            await run_pending_invalidations(session)
        except Exception as exc:
            await _rollback_quietly(session)
            if isinstance(exc, CircuitOpenError) or is_database_unavailable(exc):
                raise DatabaseUnavailableError() from exc
            raise


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request (see `open_session`); GET and HEAD only read.

    Scoped to the endpoint function, so the commit happens before the response is sent and a
    failed commit becomes an error response instead of a 200 for lost data.
    """
    read_only = request.method in READ_METHODS
    resources = resources_of(request)
    async with open_session(resources, read_only=read_only) as session:
        yield session
    if not read_only and resources.recent_writers is not None:
        await _remember_writer(request, resources)


async def _remember_writer(request: Request, resources: Resources) -> None:
    """With replicas: the signed-in writer reads the primary for a while (read-your-writes)."""
    assert resources.recent_writers is not None
    try:
        user_id = _user_id_from(request.headers.get("authorization"), request)
    except UnauthorizedError:
        return
    if user_id is not None:
        await resources.recent_writers.mark(user_id)


async def _rollback_quietly(session: AsyncSession) -> None:
    try:
        await session.rollback()
    except Exception as exc:
        log.warning("db_rollback_failed", error=type(exc).__name__)


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


@asynccontextmanager
async def open_read_connection(
    resources: Resources,
    viewer_id: int | None = None,
    prefetched: Mapping[str, object] | None = None,
) -> AsyncIterator[ReadConnection]:
    """A pooled connection for a GET route's reads, with no ORM session around it.

    No transaction either (the reads are single statements, autocommit). When sessions are
    bound to a caller's connection (tests wrap each test in a transaction), reads use that
    connection, so they see what the test wrote. Checked out through the database breaker and
    mapped to a 503 when Postgres is unavailable, like `open_session`. With replicas
    configured, `app.api.replica_reads` decides where the reads go (`viewer_id`: the signed-in
    reader, for read-your-writes; `prefetched`, what the rate limiter read with its count).
    """
    bind = resources.session_factory.kw.get("bind")
    if isinstance(bind, AsyncConnection):
        pooled = await bind.get_raw_connection()
        yield ReadConnection(pooled.driver_connection, bind.invalidate)
        return
    if resources.replicas is not None:
        replicas = resources.replicas
        async with open_replica_reads(resources, replicas, viewer_id, prefetched) as connection:
            yield connection
        return
    pooled = await checkout_primary(resources)

    async def invalidate() -> None:
        await greenlet_spawn(pooled.invalidate)

    try:
        yield ReadConnection(pooled.driver_connection, invalidate)
    except Exception as exc:
        if is_database_unavailable(exc):
            raise DatabaseUnavailableError() from exc
        raise
    finally:
        await greenlet_spawn(pooled.close)  # back to the pool (a no-op when invalidated)


def read_connection(
    request: Request, viewer_id: int | None = None
) -> AbstractAsyncContextManager[ReadConnection]:
    """For GET routes whose reads all go through `app.repositories.driver`:
    `async with read_connection(request) as connection: ...` in the endpoint.

    Not a dependency with `yield`: FastAPI runs each of those in an exit stack with an anyio
    cancel scope shielding its exit, about 20 us a request on the hottest reads. In the
    endpoint, the connection also goes back to the pool before the response model is built.
    """
    resources = resources_of(request)
    if resources.replicas is None or viewer_id is None:
        return open_read_connection(resources, viewer_id)
    prefetched = request.scope.get("state", {}).get(PREFETCHED_STATE)
    return open_read_connection(resources, viewer_id, prefetched)


# --- authentication -------------------------------------------------------------------------
# Declared as an API key header so the OpenAPI document shows how to authenticate.
authorization_header = APIKeyHeader(
    name="Authorization",
    scheme_name="Token",
    description="`Token <jwt>` (RealWorld) or `Bearer <jwt>`, from login or registration",
    auto_error=False,
)
AuthorizationDep = Annotated[str | None, Security(authorization_header)]


def _user_id_from(authorization: str | None, request: Request) -> int | None:
    if authorization is None:
        return None
    token = token_from_header(authorization)
    if token is None:
        raise UnauthorizedError("authorization header must be 'Token <jwt>'", code="invalid_token")
    try:
        return decode_access_token(token, resources_of(request).settings.secret_key)
    except InvalidTokenError as exc:
        raise UnauthorizedError("token is invalid or expired", code="invalid_token") from exc


async def get_optional_user_id(request: Request, authorization: AuthorizationDep) -> int | None:
    """The caller's id when a token is sent (a bad token is still a 401), else None."""
    return _user_id_from(authorization, request)


async def get_current_user_id(request: Request, authorization: AuthorizationDep) -> int:
    user_id = _user_id_from(authorization, request)
    if user_id is None:
        raise UnauthorizedError("authorization token is missing", code="missing_token")
    return user_id


OptionalUserId = Annotated[int | None, Depends(get_optional_user_id)]
CurrentUserId = Annotated[int, Depends(get_current_user_id)]


async def get_current_user(user_id: CurrentUserId, session: SessionDep) -> User:
    user = await users_repo.get_by_id(session, user_id)
    if user is None:  # a valid signature for an account that no longer exists
        raise UnauthorizedError("token is invalid or expired", code="invalid_token")
    return user


CurrentUser = Annotated[User, Depends(get_current_user, scope="function")]
