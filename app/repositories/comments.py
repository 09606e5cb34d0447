"""Comment queries: a thread is one SELECT with each author and the caller's `following`."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, exists, false, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Comment, Follow, User
from app.repositories.driver import CompiledRead, ReadSource, Record, fetch


@functools.cache
def _thread(with_viewer: bool) -> CompiledRead:
    """An article's comments, newest first; with a viewer, `following` for bound `viewer_id`."""
    viewer: Any = bindparam("viewer_id")
    following: Any = (
        exists().where(Follow.follower_id == viewer, Follow.followee_id == Comment.author_id)
        if with_viewer
        else false()
    )
    query = select(
        Comment.id,
        Comment.body,
        Comment.created_at,
        Comment.updated_at,
        User.username.label("author_username"),
        User.bio.label("author_bio"),
        User.image.label("author_image"),
        following.label("following"),
    ).join(User, User.id == Comment.author_id)
    return CompiledRead.of(
        query.where(Comment.article_id == bindparam("article_id")).order_by(
            Comment.created_at.desc(), Comment.id.desc()
        )
    )


async def for_article(
    source: ReadSource, article_id: int, viewer_id: int | None
) -> Sequence[Record]:
    params = {"article_id": article_id, "viewer_id": viewer_id}
    return await fetch(source, _thread(viewer_id is not None), params)


_INSERT = (
    insert(Comment)
    .values(article_id=bindparam("article_id"), author_id=bindparam("author_id"))
    .values(body=bindparam("body"))
    .returning(Comment.id, Comment.created_at, Comment.updated_at)
)


async def create(session: AsyncSession, *, article_id: int, author_id: int, body: str) -> Comment:
    """Insert on the session's connection (inside its transaction, no unit-of-work flush).

    The returned comment carries every column but is not attached to the session.
    """
    connection = await session.connection()
    params = {"article_id": article_id, "author_id": author_id, "body": body}
    row = (await connection.execute(_INSERT, params)).one()
    return Comment(
        id=row.id,
        article_id=article_id,
        author_id=author_id,
        body=body,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def get(session: AsyncSession, comment_id: int) -> Comment | None:
    return await session.get(Comment, comment_id)


async def remove(session: AsyncSession, comment: Comment) -> None:
    await session.delete(comment)
    await session.flush()
