"""Article queries.

List pages, the feed and single articles are each one SELECT that brings the author, the
caller's `following` and `favorited`, and the sorted tag list along (correlated subqueries), so
a page costs the same number of round trips whatever its size: one, the page with its total
(a second, the total alone, only for a page past the end). Totals come from maintained counts,
not from counting the matches.

Those SELECTs are built once per shape (viewer or not, which filters) with bound parameters,
compiled once for asyncpg and run on the session's driver connection (`driver.py`), where
asyncpg reuses its prepared statement.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Row,
    Select,
    String,
    and_,
    any_,
    bindparam,
    delete,
    exists,
    false,
    func,
    literal_column,
    select,
    true,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.models import Article, ArticleTag, ArticleTotal, Favorite, Follow, Tag, User
from app.repositories.driver import CompiledRead, ReadSource, Record, fetch, fetch_one


def _tag_list() -> Any:
    # Each name is a primary-key look-up of its own, by construction. As a join, the planner
    # may hash all the tags for every article of the page: with 1,000 tags, 20 sequential
    # scans of `tags` made up 3 ms of a 1M-article list page (bench.scale's plans).
    name = select(Tag.name).where(Tag.id == ArticleTag.tag_id).scalar_subquery().label("name")
    names = select(name).where(ArticleTag.article_id == Article.id).order_by(name).scalar_subquery()
    # ARRAY(SELECT ...): an empty list, not NULL, for an untagged article.
    return type_coerce(func.array(names), ARRAY(String)).label("tag_list")


def _viewer_flags(with_viewer: bool) -> list[Any]:
    if not with_viewer:
        return [false().label("following"), false().label("favorited")]
    viewer: Any = bindparam("viewer_id")
    following = exists().where(
        Follow.follower_id == viewer, Follow.followee_id == Article.author_id
    )
    favorited = exists().where(Favorite.user_id == viewer, Favorite.article_id == Article.id)
    return [following.label("following"), favorited.label("favorited")]


def article_view(
    with_viewer: bool,
    *,
    with_body: bool,
    favorites_count: Any = None,
    favorited: Any = None,
) -> Select[Any]:
    """The article columns; with a viewer, `following`/`favorited` for bound `viewer_id`.

    `favorites_count` and `favorited` replace those columns' expressions (a favourite's own
    statement knows them better than its snapshot does)."""
    flags = _viewer_flags(with_viewer)
    if favorited is not None:
        flags[1] = favorited.label("favorited")
    columns: list[Any] = [
        Article.id,
        Article.slug,
        Article.title,
        Article.description,
        Article.created_at,
        Article.updated_at,
        (Article.favorites_count if favorites_count is None else favorites_count).label(
            "favorites_count"
        ),
        Article.author_id,
        User.username.label("author_username"),
        User.bio.label("author_bio"),
        User.image.label("author_image"),
        _tag_list(),
        *flags,
    ]
    if with_body:
        columns.append(Article.body)
    return select(*columns).join(User, User.id == Article.author_id)


def _filters(*, tag: bool, author: bool, favorited_by: bool, feed: bool) -> list[Any]:
    """Conditions on bound parameters `tag`, `author`, `favorited_by` and (feed) `viewer_id`."""
    conditions: list[ColumnElement[bool]] = []
    if tag:
        tag_id = select(Tag.id).where(Tag.name == bindparam("tag")).scalar_subquery()
        conditions.append(
            exists().where(ArticleTag.article_id == Article.id, ArticleTag.tag_id == tag_id)
        )
    if author:
        author_id = select(User.id).where(User.username == bindparam("author")).scalar_subquery()
        conditions.append(Article.author_id == author_id)
    if favorited_by:
        fan = select(User.id).where(User.username == bindparam("favorited_by")).scalar_subquery()
        conditions.append(
            exists().where(Favorite.article_id == Article.id, Favorite.user_id == fan)
        )
    if feed:
        followed = select(Follow.followee_id).where(Follow.follower_id == bindparam("viewer_id"))
        conditions.append(Article.author_id.in_(followed))
    return conditions


def _maintained_total(*, tag: bool, author: bool, favorited_by: bool, feed: bool) -> Any | None:
    """The number of matches, read from the counts the triggers keep (see the migration
    "maintained counts"): a row or a few, whatever the number of articles. None for a
    combination of filters, which no count covers: those count their matches."""
    if tag + author + favorited_by + feed > 1:
        return None
    if tag:
        total = select(Tag.articles_count).where(Tag.name == bindparam("tag"))
    elif author:
        writer = aliased(User)
        total = select(writer.articles_count).where(writer.username == bindparam("author"))
    elif favorited_by:
        fan = aliased(User)
        total = select(fan.favorites_count).where(fan.username == bindparam("favorited_by"))
    elif feed:
        # The sum of the followed authors' counts: as many rows as the reader follows
        # authors, whatever the number of articles (read along with the page's, `_feed_ids`).
        followed = _followed_authors()
        total = select(func.sum(followed.c.articles_count))
    else:
        total = select(func.sum(ArticleTotal.articles))
    # A literal, not a bound 0: the compiled statement's parameters are the request's alone.
    return func.coalesce(total.scalar_subquery(), literal_column("0"))


def _ids_in_order(
    conditions: list[Any], *, tag: bool, author: bool, favorited_by: bool, feed: bool
) -> Select[Any]:
    """The ids of the matching articles, newest first, from the one index that holds them in
    that order, whatever the number of articles.

    Newest first is `id DESC`: ids come from a sequence in the order articles are written, so
    the order is the order of `created_at` (which the sequence's order decides for two articles
    written within the same microseconds). Each single filter reads its own index backwards
    and stops after the page: the favourites' and the tag links' primary keys, the authors'
    `(author_id, id DESC)`. A combination of filters reads the articles newest first and tests
    each one.
    """
    if tag and not (author or favorited_by or feed):
        tag_id = select(Tag.id).where(Tag.name == bindparam("tag")).scalar_subquery()
        return (
            select(ArticleTag.article_id.label("id"))
            .where(ArticleTag.tag_id == tag_id)
            .order_by(ArticleTag.article_id.desc())
        )
    if favorited_by and not (tag or author or feed):
        fan = select(User.id).where(User.username == bindparam("favorited_by")).scalar_subquery()
        return (
            select(Favorite.article_id.label("id"))
            .where(Favorite.user_id == fan)
            .order_by(Favorite.article_id.desc())
        )
    window = select(Article.id.label("id"))
    if conditions:
        return window.where(and_(*conditions)).order_by(Article.id.desc())
    return window.order_by(Article.id.desc())


@functools.cache
def _followed_authors() -> Any:
    """The authors `viewer_id` follows, with their count and newest article id: one index-only
    look-up each (`ix_users_feed`), shared by the feed's page and its total."""
    return (
        select(User.id, User.articles_count, User.latest_article_id)
        .join(Follow, Follow.followee_id == User.id)
        .where(Follow.follower_id == bindparam("viewer_id"))
        .cte("followed")
    )


def _feed_ids() -> Select[Any]:
    """The feed's page: only the `offset + limit` followed authors whose newest articles are
    the newest can have an article on it, and at most `offset + limit` articles each.

    Were an article of another followed author on the page, the newest articles of those
    `offset + limit` authors, each newer than it, would be `offset + limit` feed articles newer
    than it, and it would not be on the page. So the page reads the followed authors (their
    count is the total anyway), then at most (offset + limit)² entries of the authors' index
    (`ix_articles_author_id_id`), instead of every article of every followed author."""
    limit, offset = bindparam("limit", type_=BigInteger), bindparam("offset", type_=BigInteger)
    followed = _followed_authors()
    recent = (
        select(followed.c.id)
        .where(followed.c.latest_article_id.is_not(None))
        .order_by(followed.c.latest_article_id.desc())
        .limit(limit + offset)
        .subquery("recent")
    )
    newest = (
        select(Article.id)
        .where(Article.author_id == recent.c.id)
        .order_by(Article.id.desc())
        .limit(limit + offset)
        .lateral("newest")
    )
    return (
        select(newest.c.id.label("id"))
        .select_from(recent.join(newest, true()))
        .order_by(newest.c.id.desc())
        .limit(limit)
        .offset(offset)
    )


def _anchored_ids() -> Select[Any]:
    """The global list's page, found by seeking: `conduit_article_anchor(offset)` walks the
    per-512-ids article counts from the newest to the bucket that holds the page's first
    article, and answers the bucket's upper id bound and how many of its articles to skip
    (fewer than 512). O(offset / 512 + 512) instead of O(offset), and exact: the counts and
    the articles are read in the statement's one snapshot."""
    anchor = select(
        func.conduit_article_anchor(bindparam("offset", type_=BigInteger))
        .table_valued("upper", "rest")
        .render_derived()
    ).cte("anchor")
    return (
        select(Article.id.label("id"))
        .where(Article.id < select(anchor.c.upper).scalar_subquery())
        .order_by(Article.id.desc())
        .limit(bindparam("limit"))
        .offset(select(anchor.c.rest).scalar_subquery())
    )


@functools.cache
def _page_statements(
    with_viewer: bool, tag: bool, author: bool, favorited_by: bool, feed: bool
) -> tuple[CompiledRead, CompiledRead]:
    """(page with its total, total alone) for one shape of request; `limit`, `offset` bound.

    The page selects the ids of its window first (`_ids_in_order`), and only then joins the
    authors and computes tags and flags, for those rows alone. Its total comes along as one
    more column: a maintained count (`_maintained_total`), or, for a combination of filters,
    `count(*) OVER ()` over the matches. The total alone is for a page past the end, which has
    no rows to carry it.
    """
    conditions = _filters(tag=tag, author=author, favorited_by=favorited_by, feed=feed)
    maintained = _maintained_total(tag=tag, author=author, favorited_by=favorited_by, feed=feed)
    if not conditions:
        ids = _anchored_ids().subquery("page")
    elif feed and not (tag or author or favorited_by):
        ids = _feed_ids().subquery("page")
    else:
        window = _ids_in_order(
            conditions, tag=tag, author=author, favorited_by=favorited_by, feed=feed
        )
        if maintained is None:
            window = window.add_columns(func.count().over().label("total"))
        ids = window.limit(bindparam("limit")).offset(bindparam("offset")).subquery("page")
    total = ids.c.total if maintained is None else maintained.label("total")
    rows = (
        article_view(with_viewer, with_body=False)
        .add_columns(total)
        .join(ids, ids.c.id == Article.id)
        .order_by(ids.c.id.desc())
    )
    if maintained is not None:
        count = select(maintained)
    else:
        count = select(func.count()).select_from(Article).where(and_(*conditions))
    return CompiledRead.of(rows), CompiledRead.of(count)


@functools.cache
def _by_slug_statement(with_viewer: bool) -> CompiledRead:
    query = article_view(with_viewer, with_body=True).where(Article.slug == bindparam("slug"))
    return CompiledRead.of(query)


def _viewer_flags_statement(*, many: bool) -> CompiledRead:
    """For bound `viewer_id` and `slugs` (or one `slug`): each existing article's slug with the
    viewer's `favorited` and `following`. Per article, a primary-key look-up in favorites and
    one in follows: what a signed-in reader adds to a public (cached) body.

    One article is matched with `=`, not `= ANY` of a one-element array: Postgres prices the
    array's generic plan above its custom ones and would plan the statement again on every
    execution, which doubled its CPU. Pages (up to 20 slugs) get the generic plan either way
    (tests/integration/test_viewer_flags_plans.py)."""
    # Its own typed `viewer_id` (not `_viewer_flags`'): the bigint cast is part of what the
    # plan test characterises; untyped, the one-element array keeps a generic plan too.
    viewer: Any = bindparam("viewer_id", type_=BigInteger)
    favorited = exists().where(Favorite.user_id == viewer, Favorite.article_id == Article.id)
    following = exists().where(
        Follow.follower_id == viewer, Follow.followee_id == Article.author_id
    )
    query = select(Article.slug, favorited.label("favorited"), following.label("following"))
    if many:
        return CompiledRead.of(
            query.where(Article.slug == any_(bindparam("slugs", type_=ARRAY(String))))
        )
    return CompiledRead.of(query.where(Article.slug == bindparam("slug")))


VIEWER_FLAGS_ONE = _viewer_flags_statement(many=False)
VIEWER_FLAGS_MANY = _viewer_flags_statement(many=True)


async def viewer_flags(
    source: ReadSource, viewer_id: int, slugs: Sequence[str]
) -> dict[str, tuple[bool, bool]]:
    """{slug: (favorited, following)} for those of `slugs` that still exist."""
    if len(slugs) == 1:
        params: dict[str, Any] = {"viewer_id": viewer_id, "slug": slugs[0]}
        rows = await fetch(source, VIEWER_FLAGS_ONE, params)
    else:
        rows = await fetch(
            source, VIEWER_FLAGS_MANY, {"viewer_id": viewer_id, "slugs": list(slugs)}
        )
    return {row[0]: (bool(row[1]), bool(row[2])) for row in rows}


_ID_BY_SLUG = CompiledRead.of(select(Article.id).where(Article.slug == bindparam("slug")))


async def page(
    source: ReadSource,
    *,
    viewer_id: int | None,
    limit: int,
    offset: int,
    tag: str | None = None,
    author: str | None = None,
    favorited_by: str | None = None,
    feed: bool = False,
) -> tuple[Sequence[Record], int]:
    """A page of articles, newest first, and the total number of matches.

    `feed` keeps the articles of the authors `viewer_id` follows.
    """
    if feed and viewer_id is None:
        raise ValueError("the feed needs a viewer")
    rows_query, count_query = _page_statements(
        viewer_id is not None, tag is not None, author is not None, favorited_by is not None, feed
    )
    params: dict[str, Any] = {"viewer_id": viewer_id, "tag": tag, "author": author}
    params["favorited_by"] = favorited_by
    rows = await fetch(source, rows_query, {**params, "limit": limit, "offset": offset})
    if rows:
        return rows, int(rows[0].total)
    if offset == 0:
        return rows, 0
    counted = await fetch_one(source, count_query, params)
    return rows, int(counted[0]) if counted is not None else 0


async def view_by_slug(source: ReadSource, slug: str, viewer_id: int | None) -> Record | None:
    params = {"slug": slug, "viewer_id": viewer_id}
    return await fetch_one(source, _by_slug_statement(viewer_id is not None), params)


async def get_by_slug(session: AsyncSession, slug: str) -> Article | None:
    result = await session.execute(select(Article).where(Article.slug == slug))
    return result.scalar_one_or_none()


async def slugs_by_author(session: AsyncSession, author_id: int) -> list[str]:
    result = await session.scalars(select(Article.slug).where(Article.author_id == author_id))
    return list(result)


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


async def id_by_slug(source: ReadSource, slug: str) -> int | None:
    row = await fetch_one(source, _ID_BY_SLUG, {"slug": slug})
    return int(row[0]) if row is not None else None


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


def _favorite_statement(*, add: bool) -> CompiledRead:
    """Add (or remove) bound `viewer_id`'s favourite of the article `article_slug`, keep its
    `favorites_count` in step, and answer the article as the viewer now sees it: one
    statement, which is its own transaction (no BEGIN or COMMIT round trips). No row: no such
    article.

    The count moves only when the favourite row was really inserted or deleted (the CTE returns
    nothing otherwise), so repeating either request changes nothing. The final SELECT reads the
    statement's snapshot, from before its own changes: the count comes from the UPDATE's
    RETURNING when there was one, and `favorited` is what the request made true.
    """
    viewer: Any = bindparam("viewer_id", type_=BigInteger)
    # Not named "slug": Core adds to an UPDATE's SET clause every column named by a key of
    # the execution parameters (articles.slug, here), CTE or not.
    slug: Any = bindparam("article_slug")
    # The article is locked first: the favourite's trigger then locks the fan's row, in the
    # order a deletion of the article takes them (the article, then its fans through the
    # cascade), so a favourite racing the article's deletion waits instead of deadlocking.
    # Only when there is something to change: a repeated favourite or an unfavourite of an
    # article never favourited locks nothing (most unfavourites of the bench's write mix).
    favourite_exists = exists().where(Favorite.user_id == viewer, Favorite.article_id == Article.id)
    target = (
        select(Article.id)
        .where(Article.slug == slug, ~favourite_exists if add else favourite_exists)
        .with_for_update(key_share=True)
        .cte("target")
    )
    changed: Any
    if add:
        changed = (
            insert(Favorite)
            .from_select(["user_id", "article_id"], select(viewer, target.c.id))
            .on_conflict_do_nothing()
            .returning(Favorite.article_id)
            .cte("changed")
        )
    else:
        changed = (
            delete(Favorite)
            .where(Favorite.user_id == viewer, Favorite.article_id.in_(select(target.c.id)))
            .returning(Favorite.article_id)
            .cte("changed")
        )
    # A literal: the compiled statement's parameters are the request's alone.
    step: Any = literal_column("1" if add else "-1")
    counted = (
        update(Article)
        .where(Article.id.in_(select(changed.c.article_id)))
        .values(favorites_count=Article.favorites_count + step)
        .returning(Article.favorites_count)
        .cte("counted")
    )
    count = func.coalesce(
        select(counted.c.favorites_count).scalar_subquery(), Article.favorites_count
    )
    view = article_view(
        True, with_body=True, favorites_count=count, favorited=true() if add else false()
    )
    return CompiledRead.of(view.where(Article.slug == slug))


_ADD_FAVORITE = _favorite_statement(add=True)
_REMOVE_FAVORITE = _favorite_statement(add=False)


async def set_favorite(
    source: ReadSource, viewer_id: int, slug: str, *, favorite: bool
) -> Record | None:
    """Favourite (or unfavourite) and read the article back in one statement (see
    `_favorite_statement`); None when there is no article `slug`."""
    statement = _ADD_FAVORITE if favorite else _REMOVE_FAVORITE
    return await fetch_one(source, statement, {"viewer_id": viewer_id, "article_slug": slug})
