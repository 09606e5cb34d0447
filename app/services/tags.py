"""Tags: the popular-tags list, cached and dropped whenever an article's tags change."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.cache import Cache, cache_key, invalidate_after_commit
from app.repositories import tags as tags_repo

TAGS_KEY = cache_key("tags")


async def popular_tags(
    open_session: Callable[[], AbstractAsyncContextManager[AsyncSession]], cache: Cache
) -> list[str]:
    """From the cache; Postgres (a session opened only then) on a miss."""

    async def load() -> list[str]:
        async with open_session() as session:
            return await tags_repo.popular(session)

    cached: list[str] = await cache.get_or_load(TAGS_KEY, load)
    return cached


def invalidate_tags(session: AsyncSession, cache: Cache) -> None:
    invalidate_after_commit(session, cache, TAGS_KEY)
