"""Tag queries."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Tag

POPULAR_TAGS_LIMIT = 100


async def popular(session: AsyncSession, limit: int = POPULAR_TAGS_LIMIT) -> list[str]:
    """Tags in use, most used first (the "Popular Tags" sidebar of RealWorld frontends): the
    first entries of the index on the maintained counts, never a count of `article_tags`."""
    query = (
        select(Tag.name)
        .where(Tag.articles_count > 0)
        .order_by(Tag.articles_count.desc(), Tag.name)
        .limit(limit)
    )
    return list((await session.execute(query)).scalars().all())
