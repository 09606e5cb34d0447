"""Comment queries: a thread is one SELECT with each author and the caller's `following`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, exists, false, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Comment, Follow, User


def _view(viewer_id: int | None) -> Any:
    following: Any = (
        exists().where(Follow.follower_id == viewer_id, Follow.followee_id == Comment.author_id)
        if viewer_id is not None
        else false()
    )
    return select(
        Comment.id,
        Comment.body,
        Comment.created_at,
        Comment.updated_at,
        User.username.label("author_username"),
        User.bio.label("author_bio"),
        User.image.label("author_image"),
        following.label("following"),
    ).join(User, User.id == Comment.author_id)


async def for_article(
    session: AsyncSession, article_id: int, viewer_id: int | None
) -> Sequence[Row[Any]]:
    query = (
        _view(viewer_id)
        .where(Comment.article_id == article_id)
        .order_by(Comment.created_at.desc(), Comment.id.desc())
    )
    return (await session.execute(query)).all()


async def create(session: AsyncSession, *, article_id: int, author_id: int, body: str) -> Comment:
    comment = Comment(article_id=article_id, author_id=author_id, body=body)
    session.add(comment)
    await session.flush()
    return comment


async def get(session: AsyncSession, comment_id: int) -> Comment | None:
    return await session.get(Comment, comment_id)


async def remove(session: AsyncSession, comment: Comment) -> None:
    await session.delete(comment)
    await session.flush()
