"""Comment use-cases; only a comment's author may delete it."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.error_handlers import ForbiddenError, NotFoundError
from app.repositories import articles as articles_repo
from app.repositories import comments as repo
from app.repositories.driver import ReadConnection, ReadSource
from app.services import presenters

WriteOpener = Callable[[], AbstractAsyncContextManager[ReadConnection]]


async def _article_id(source: ReadSource, slug: str) -> int:
    article_id = await articles_repo.id_by_slug(source, slug)
    if article_id is None:
        raise NotFoundError(f"article {slug} not found", code="article_not_found")
    return article_id


async def list_comments(source: ReadSource, slug: str, viewer_id: int | None) -> bytes:
    """`{"comments": [...]}` as JSON bytes, rendered from the rows (`presenters.comment_json`)."""
    article_id = await _article_id(source, slug)
    rows = await repo.for_article(source, article_id, viewer_id)
    return orjson.dumps({"comments": [presenters.comment_json(row) for row in rows]})


async def add_comment(open_writes: WriteOpener, slug: str, author_id: int, body: str) -> bytes:
    """The new comment as JSON bytes (`{"comment": ...}`): one statement on a connection of its
    own, which commits as it ends (`repo.add`)."""
    async with open_writes() as source:
        row = await repo.add(source, slug=slug, author_id=author_id, body=body)
    if row is None:
        raise NotFoundError(f"article {slug} not found", code="article_not_found")
    return orjson.dumps({"comment": presenters.comment_json(row)})


async def delete_comment(session: AsyncSession, slug: str, comment_id: int, user_id: int) -> None:
    article_id = await _article_id(session, slug)
    comment = await repo.get(session, comment_id)
    if comment is None or comment.article_id != article_id:
        raise NotFoundError(f"comment {comment_id} not found", code="comment_not_found")
    if comment.author_id != user_id:
        raise ForbiddenError("comment belongs to another user", code="not_comment_author")
    await repo.remove(session, comment)
