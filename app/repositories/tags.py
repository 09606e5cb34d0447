"""Tag queries."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import ArticleTag, Tag

POPULAR_TAGS_LIMIT = 100


async def popular(session: AsyncSession, limit: int = POPULAR_TAGS_LIMIT) -> list[str]:
    """Tags in use, most used first (the "Popular Tags" sidebar of RealWorld frontends)."""
    query = (
        select(Tag.name)
        .join(ArticleTag, ArticleTag.tag_id == Tag.id)
        .group_by(Tag.id, Tag.name)
        .order_by(func.count().desc(), Tag.name)
        .limit(limit)
    )
    return list((await session.execute(query)).scalars().all())
