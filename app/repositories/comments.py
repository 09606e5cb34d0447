"""Comment queries: a thread is one SELECT with each author and the caller's `following`; a
new comment is one INSERT that answers it with its author."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, bindparam, exists, false, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Article, Comment, Follow, User
from app.repositories.driver import CompiledRead, ReadSource, Record, fetch, fetch_one


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


def _add_statement() -> CompiledRead:
    """Comment bound `body` on the article `article_slug` as bound `author_id`, and answer the
    comment with its author's profile: one statement, its own transaction. No row: no such
    article. The article is locked against deletion (KEY SHARE) until the comment is in, so a
    racing deletion waits for it and removes it with the article."""
    target = (
        select(Article.id)
        .where(Article.slug == bindparam("article_slug"))
        .with_for_update(read=True, key_share=True)
        .cte("target")
    )
    added = (
        insert(Comment)
        .from_select(
            ["article_id", "author_id", "body"],
            select(target.c.id, bindparam("author_id", type_=BigInteger), bindparam("body")),
        )
        .returning(
            Comment.id, Comment.body, Comment.created_at, Comment.updated_at, Comment.author_id
        )
        .cte("added")
    )
    query = select(
        added.c.id,
        added.c.body,
        added.c.created_at,
        added.c.updated_at,
        User.username.label("author_username"),
        User.bio.label("author_bio"),
        User.image.label("author_image"),
        false().label("following"),  # nobody follows themselves
    ).join(User, User.id == added.c.author_id)
    return CompiledRead.of(query)


_ADD = _add_statement()


async def add(source: ReadSource, *, slug: str, author_id: int, body: str) -> Record | None:
    """The new comment with its author (see `_add_statement`); None when there is no article."""
    return await fetch_one(
        source, _ADD, {"article_slug": slug, "author_id": author_id, "body": body}
    )


async def get(session: AsyncSession, comment_id: int) -> Comment | None:
    return await session.get(Comment, comment_id)


async def remove(session: AsyncSession, comment: Comment) -> None:
    await session.delete(comment)
    await session.flush()
