"""Article queries.

List pages, the feed and single articles are each one SELECT that brings the author, the
caller's `following` and `favorited`, and the sorted tag list along (correlated subqueries), so
a page costs the same number of round trips whatever its size: the page, plus its total count.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    String,
    and_,
    delete,
    exists,
    false,
    func,
    select,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Article, ArticleTag, Favorite, Follow, Tag, User


def _tag_list() -> Any:
    names = (
        select(Tag.name)
        .join(ArticleTag, ArticleTag.tag_id == Tag.id)
        .where(ArticleTag.article_id == Article.id)
        .order_by(Tag.name)
        .scalar_subquery()
    )
    # ARRAY(SELECT ...): an empty list, not NULL, for an untagged article.
    return type_coerce(func.array(names), ARRAY(String)).label("tag_list")


def _viewer_flags(viewer_id: int | None) -> list[Any]:
    if viewer_id is None:
        return [false().label("following"), false().label("favorited")]
    following = exists().where(
        Follow.follower_id == viewer_id, Follow.followee_id == Article.author_id
    )
    favorited = exists().where(Favorite.user_id == viewer_id, Favorite.article_id == Article.id)
    return [following.label("following"), favorited.label("favorited")]


def article_view(viewer_id: int | None, *, with_body: bool) -> Select[Any]:
    columns: list[Any] = [
        Article.id,
        Article.slug,
        Article.title,
        Article.description,
        Article.created_at,
        Article.updated_at,
        Article.favorites_count,
        Article.author_id,
        User.username.label("author_username"),
        User.bio.label("author_bio"),
        User.image.label("author_image"),
        _tag_list(),
        *_viewer_flags(viewer_id),
    ]
    if with_body:
        columns.append(Article.body)
    return select(*columns).join(User, User.id == Article.author_id)


def list_filters(
    *, tag: str | None, author: str | None, favorited_by: str | None
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if tag is not None:
        conditions.append(
            exists()
            .where(ArticleTag.article_id == Article.id)
            .where(ArticleTag.tag_id == select(Tag.id).where(Tag.name == tag).scalar_subquery())
        )
    if author is not None:
        conditions.append(
            Article.author_id == select(User.id).where(User.username == author).scalar_subquery()
        )
    if favorited_by is not None:
        fan = select(User.id).where(User.username == favorited_by).scalar_subquery()
        conditions.append(
            exists().where(Favorite.article_id == Article.id, Favorite.user_id == fan)
        )
    return conditions


def feed_filter(viewer_id: int) -> ColumnElement[bool]:
    return Article.author_id.in_(select(Follow.followee_id).where(Follow.follower_id == viewer_id))


async def page(
    session: AsyncSession,
    conditions: Sequence[ColumnElement[bool]],
    *,
    viewer_id: int | None,
    limit: int,
    offset: int,
) -> tuple[Sequence[Row[Any]], int]:
    where = and_(*conditions) if conditions else None
    rows_query = article_view(viewer_id, with_body=False)
    count_query = select(func.count()).select_from(Article)
    if where is not None:
        rows_query = rows_query.where(where)
        count_query = count_query.where(where)
    rows_query = rows_query.order_by(Article.created_at.desc(), Article.id.desc())
    rows = (await session.execute(rows_query.limit(limit).offset(offset))).all()
    # The total is only needed when the page does not already tell it.
    if offset == 0 and len(rows) < limit:
        return rows, len(rows)
    total = int(await session.scalar(count_query) or 0)
    return rows, total


async def view_by_slug(session: AsyncSession, slug: str, viewer_id: int | None) -> Row[Any] | None:
    query = article_view(viewer_id, with_body=True).where(Article.slug == slug)
    row: Row[Any] | None = (await session.execute(query)).one_or_none()
    return row


async def get_by_slug(session: AsyncSession, slug: str) -> Article | None:
    result = await session.execute(select(Article).where(Article.slug == slug))
    return result.scalar_one_or_none()


async def slug_exists(session: AsyncSession, slug: str) -> bool:
    return bool(await session.scalar(select(exists().where(Article.slug == slug))))


async def insert_unless_slug_taken(
    session: AsyncSession, *, slug: str, title: str, description: str, body: str, author_id: int
) -> Row[int, datetime, datetime] | None:
    """Insert and return (id, created_at, updated_at); None when the slug is already taken.

    ON CONFLICT DO NOTHING keeps the transaction usable, so the caller can retry another slug.
    """
    query = (
        insert(Article)
        .values(slug=slug, title=title, description=description, body=body, author_id=author_id)
        .on_conflict_do_nothing(index_elements=[Article.slug])
        .returning(Article.id, Article.created_at, Article.updated_at)
    )
    return (await session.execute(query)).one_or_none()


async def id_by_slug(session: AsyncSession, slug: str) -> int | None:
    return await session.scalar(select(Article.id).where(Article.slug == slug))


async def set_tags(
    session: AsyncSession, article_id: int, names: Sequence[str], *, replace: bool
) -> None:
    """Link the article to `names`: upsert the tags, then link them (three statements at most)."""
    if replace:
        await session.execute(delete(ArticleTag).where(ArticleTag.article_id == article_id))
    if not names:
        return
    upsert = (
        insert(Tag)
        .values([{"name": name} for name in names])
        .on_conflict_do_update(index_elements=[Tag.name], set_={"name": insert(Tag).excluded.name})
        .returning(Tag.id)
    )
    tag_ids = (await session.execute(upsert)).scalars().all()
    await session.execute(
        insert(ArticleTag).values([{"article_id": article_id, "tag_id": t} for t in tag_ids])
    )


async def save(session: AsyncSession, article: Article) -> Article:
    article.updated_at = func.statement_timestamp()
    await session.flush()
    return article


async def remove(session: AsyncSession, article: Article) -> None:
    await session.delete(article)
    await session.flush()


async def add_favorite(session: AsyncSession, user_id: int, article_id: int) -> None:
    inserted = await session.scalar(
        insert(Favorite)
        .values(user_id=user_id, article_id=article_id)
        .on_conflict_do_nothing()
        .returning(Favorite.article_id)
    )
    if inserted is not None:
        await session.execute(
            update(Article)
            .where(Article.id == article_id)
            .values(favorites_count=Article.favorites_count + 1)
        )


async def remove_favorite(session: AsyncSession, user_id: int, article_id: int) -> None:
    removed = await session.scalar(
        delete(Favorite)
        .where(Favorite.user_id == user_id, Favorite.article_id == article_id)
        .returning(Favorite.article_id)
    )
    if removed is not None:
        await session.execute(
            update(Article)
            .where(Article.id == article_id)
            .values(favorites_count=Article.favorites_count - 1)
        )
