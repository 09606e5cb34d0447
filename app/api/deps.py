"""Request dependencies: resources from app.state, the DB session, settings, cache."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.state import Resources
from app.core.config import Settings
from app.core.error_handlers import DatabaseUnavailableError
from app.core.logging_config import get_logger
from app.db.cache import Cache
from app.db.database_production import is_database_unavailable

log = get_logger(__name__)


def get_resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


def get_app_settings(resources: ResourcesDep) -> Settings:
    return resources.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def get_cache(resources: ResourcesDep) -> Cache:
    return resources.cache


CacheDep = Annotated[Cache, Depends(get_cache)]


async def get_session(resources: ResourcesDep) -> AsyncIterator[AsyncSession]:
    """One session per request: commit when the endpoint succeeded, roll back when it raised.

    Scoped to the endpoint function, so the commit happens before the response is sent and a
    failed commit becomes an error response instead of a 200 for lost data.
    """
    async with resources.session_factory() as session:
        try:
            yield session
            await session.commit()
        except Exception as exc:
            await _rollback_quietly(session)
            if is_database_unavailable(exc):
                raise DatabaseUnavailableError() from exc
            raise


async def _rollback_quietly(session: AsyncSession) -> None:
    try:
        await session.rollback()
    except Exception as exc:
        log.warning("db_rollback_failed", error=type(exc).__name__)


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
