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
from app.core.tokens import InvalidTokenError, TokenClaims, decode_access_token, token_from_header
from app.db.after_commit import run_after_commit
from app.db.cache import Cache, run_pending_invalidations
from app.db.database_production import is_database_unavailable
from app.db.token_versions import VersionUnknownError, parse_version, version_key
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
            await run_after_commit(session)
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


def write_connection(request: Request) -> AbstractAsyncContextManager[ReadConnection]:
    """For a write that is one statement, and so its own transaction: a pooled primary
    connection with no session around it, as `read_connection` gives reads. Call
    `remember_writer` once it has succeeded."""
    return open_read_connection(resources_of(request), primary=True)


async def remember_writer(request: Request) -> None:
    """After a write made without a session (`write_connection`): what `get_session` does
    after its commit."""
    resources = resources_of(request)
    if resources.recent_writers is not None:
        await _remember_writer(request, resources)


async def _remember_writer(request: Request, resources: Resources) -> None:
    """With replicas: the signed-in writer reads the primary for a while (read-your-writes)."""
    assert resources.recent_writers is not None  # nosec B101 # the caller checked it
    try:
        claims = _claims_from(request.headers.get("authorization"), request)
    except UnauthorizedError:
        return
    if claims is not None:
        await resources.recent_writers.mark(claims.user_id)


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
    *,
    primary: bool = False,
) -> AsyncIterator[ReadConnection]:
    """A pooled connection for a GET route's reads, with no ORM session around it.

    No transaction either (the reads are single statements, autocommit). When sessions are
    bound to a caller's connection (tests wrap each test in a transaction), reads use that
    connection, so they see what the test wrote. Checked out through the database breaker and
    mapped to a 503 when Postgres is unavailable, like `open_session`. With replicas
    configured, `app.api.replica_reads` decides where the reads go (`viewer_id`: the signed-in
    reader, for read-your-writes; `prefetched`, what the rate limiter read with its count),
    unless `primary` asks for the primary.
    """
    bind = resources.session_factory.kw.get("bind")
    if isinstance(bind, AsyncConnection):
        pooled = await bind.get_raw_connection()
        yield ReadConnection(pooled.driver_connection, bind.invalidate)
        return
    if resources.replicas is not None and not primary:
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


def _invalid_token() -> UnauthorizedError:
    # One message for every reason (bad signature, expired, revoked, unknown key, no account):
    # the reason is for the log line, not for whoever holds the token.
    return UnauthorizedError("token is invalid or expired", code="invalid_token")


def _claims_from(authorization: str | None, request: Request) -> TokenClaims | None:
    """The verified claims of the request's token, None without one; not yet checked for
    revocation (see `_require_current_version`)."""
    if authorization is None:
        return None
    token = token_from_header(authorization)
    if token is None:
        raise UnauthorizedError("authorization header must be 'Token <jwt>'", code="invalid_token")
    try:
        return decode_access_token(token, resources_of(request).signing_keys)
    except InvalidTokenError as exc:
        raise _invalid_token() from exc


async def _require_current_version(request: Request, claims: TokenClaims) -> None:
    """Refuse a token issued before its account's last password or email change.

    The current version normally came with the rate limiter's count (no round trip of its
    own); else Redis is asked, and when Redis cannot answer, Postgres (app/db/token_versions.py).
    """
    key = version_key(claims.user_id)
    prefetched = request.scope.get("state", {}).get(PREFETCHED_STATE)
    resources = resources_of(request)
    current: int | None
    if prefetched is not None and key in prefetched:
        current = parse_version(prefetched[key])
    else:
        try:
            current = await resources.token_versions.current(claims.user_id)
        except VersionUnknownError:
            async with open_read_connection(resources, primary=True) as connection:
                current = await users_repo.token_version(connection, claims.user_id)
            if current is None:  # a valid signature for an account that no longer exists
                raise _invalid_token() from None
    if current is not None and claims.version < current:
        log.info("token_revoked", user_id=claims.user_id, version=claims.version)
        raise _invalid_token()


async def get_optional_user_id(request: Request, authorization: AuthorizationDep) -> int | None:
    """The caller's id when a token is sent (a bad or revoked token is still a 401), else None."""
    claims = _claims_from(authorization, request)
    if claims is None:
        return None
    await _require_current_version(request, claims)
    return claims.user_id


async def get_current_user_id(request: Request, authorization: AuthorizationDep) -> int:
    claims = _claims_from(authorization, request)
    if claims is None:
        raise UnauthorizedError("authorization token is missing", code="missing_token")
    await _require_current_version(request, claims)
    return claims.user_id


async def get_token_claims(request: Request, authorization: AuthorizationDep) -> TokenClaims:
    """For routes that load the account: its row says the current version, no other check."""
    claims = _claims_from(authorization, request)
    if claims is None:
        raise UnauthorizedError("authorization token is missing", code="missing_token")
    return claims


OptionalUserId = Annotated[int | None, Depends(get_optional_user_id)]
CurrentUserId = Annotated[int, Depends(get_current_user_id)]


async def get_current_user(
    claims: Annotated[TokenClaims, Depends(get_token_claims)], session: SessionDep
) -> User:
    user = await users_repo.get_by_id(session, claims.user_id)
    if user is None:  # a valid signature for an account that no longer exists
        raise _invalid_token()
    if claims.version < user.token_version:
        log.info("token_revoked", user_id=claims.user_id, version=claims.version)
        raise _invalid_token()
    return user


CurrentUser = Annotated[User, Depends(get_current_user, scope="function")]
