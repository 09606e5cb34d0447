"""Tags: the popular-tags list, cached as the response body and dropped whenever an article's
tags change."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.cache import Cache, cache_key, invalidate_after_commit
from app.repositories import tags as tags_repo
from app.schemas.tags import TagsResponse

# The body GET /api/tags sends, as it is sent. Every frontend page asks for it, so a hit must
# cost no parsing or validation: the route hands these bytes on. (A key of its own: the old
# "tags" key held the bare list, which a worker of the previous release may still read.)
TAGS_KEY = cache_key("tags", "response")


async def tags_response(
    open_session: Callable[[], AbstractAsyncContextManager[AsyncSession]], cache: Cache
) -> bytes:
    """The JSON body: from the cache; from Postgres (a session opened only then) on a miss,
    stored for the next reader."""
    body = await cache.get_raw(TAGS_KEY, name="tags")
    if body is not None:
        return body
    async with open_session() as session:
        tags = await tags_repo.popular(session)
    body = TagsResponse(tags=tags).model_dump_json().encode()
    await cache.set_raw(TAGS_KEY, body)
    return body


def invalidate_tags(session: AsyncSession, cache: Cache) -> None:
    invalidate_after_commit(session, cache, TAGS_KEY)
