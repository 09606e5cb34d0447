"""Comment use-cases; only a comment's author may delete it."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.error_handlers import ForbiddenError, NotFoundError
from app.models import User
from app.repositories import articles as articles_repo
from app.repositories import comments as repo
from app.repositories.driver import ReadSource
from app.schemas.comments import Comment
from app.services import presenters


async def _article_id(source: ReadSource, slug: str) -> int:
    article_id = await articles_repo.id_by_slug(source, slug)
    if article_id is None:
        raise NotFoundError(f"article {slug} not found", code="article_not_found")
    return article_id


async def list_comments(source: ReadSource, slug: str, viewer_id: int | None) -> list[Comment]:
    article_id = await _article_id(source, slug)
    rows = await repo.for_article(source, article_id, viewer_id)
    return [presenters.comment(row) for row in rows]


async def add_comment(session: AsyncSession, slug: str, author: User, body: str) -> Comment:
    article_id = await _article_id(session, slug)
    created = await repo.create(session, article_id=article_id, author_id=author.id, body=body)
    return Comment(
        id=created.id,
        body=created.body,
        created_at=created.created_at,
        updated_at=created.updated_at,
        author=presenters.own_profile(author),
    )


async def delete_comment(session: AsyncSession, slug: str, comment_id: int, user_id: int) -> None:
    article_id = await _article_id(session, slug)
    comment = await repo.get(session, comment_id)
    if comment is None or comment.article_id != article_id:
        raise NotFoundError(f"comment {comment_id} not found", code="comment_not_found")
    if comment.author_id != user_id:
        raise ForbiddenError("comment belongs to another user", code="not_comment_author")
    await repo.remove(session, comment)
