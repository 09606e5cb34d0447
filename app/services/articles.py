"""Article use-cases: lists, feed, CRUD, favourites. Ownership is checked here.

What an anonymous reader gets for one article (no `favorited`, no `following`: both false) is
cached as the response body itself, cache-aside, and dropped after the commit of anything that
changes it: an edit, a deletion, a favourite or unfavourite (the count), and a change to the
author's profile (`app.services.users.update`). A reader with a token gets the same body with
their own two flags, which alone are read from Postgres (`app.services.viewer_view`).

Anonymous list pages are cached the same way under a *generation*: a random token kept in one
key, part of every page's key. Any change that can show on any page (the same events, plus a
new article) drops the generation key after its commit; the next reader starts a new
generation, and the old pages are never read again (their TTL clears them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.error_handlers import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    ValidationFailedError,
)
from app.db.cache import Cache, cache_key, invalidate_after_commit
from app.models import Article as ArticleModel
from app.models import User
from app.repositories import articles as repo
from app.repositories.driver import ReadSource, Record
from app.schemas.articles import (
    Article,
    NewArticle,
    UpdateArticle,
)
from app.services import presenters, viewer_sets, viewer_view
from app.services.slugs import new_slug
from app.services.tags import invalidate_tags

SLUG_ATTEMPTS = 5


def _not_found(slug: str) -> NotFoundError:
    return NotFoundError(f"article {slug} not found", code="article_not_found")


@dataclass(frozen=True, slots=True)
class ListQuery:
    """GET /api/articles's filters and page: what a list reads, and what its cache key holds."""

    tag: str | None = None
    author: str | None = None
    favorited: str | None = None
    limit: int = 20
    offset: int = 0

    @property
    def filtered(self) -> bool:
        return self.tag is not None or self.author is not None or self.favorited is not None


# A filtered list or the feed reaches page `offset` by skipping that many entries of its index
# (the global list seeks: app/repositories/articles.py, `_anchored_ids`). The cap keeps the
# deepest such page at about 10,000 index entries, a millisecond or two of Postgres time,
# instead of hundreds of thousands for a popular tag: page 500 at 20 a page, further than any
# RealWorld frontend's pager is clicked.
MAX_FILTERED_OFFSET = 10_000


def require_reachable(offset: int, *, filtered: bool) -> None:
    if filtered and offset > MAX_FILTERED_OFFSET:
        raise ValidationFailedError(
            f"offset must be at most {MAX_FILTERED_OFFSET} with tag, author or favorited, "
            "and in the feed; without filters any offset is served",
            code="offset_too_deep",
        )


def _page_json(rows: Sequence[Record], total: int) -> dict[str, Any]:
    """`ArticleListResponse` as its JSON object, built from the rows directly."""
    return {"articles": [presenters.summary_json(row) for row in rows], "articlesCount": total}


async def list_articles(
    source: ReadSource, *, viewer_id: int | None, query: ListQuery
) -> dict[str, Any]:
    require_reachable(query.offset, filtered=query.filtered)
    rows, total = await repo.page(
        source,
        viewer_id=viewer_id,
        limit=query.limit,
        offset=query.offset,
        tag=query.tag,
        author=query.author,
        favorited_by=query.favorited,
    )
    return _page_json(rows, total)


async def feed(source: ReadSource, *, viewer_id: int, limit: int, offset: int) -> bytes:
    """The reader's feed page, as JSON bytes, read from Postgres."""
    require_reachable(offset, filtered=True)
    rows, total = await repo.page(
        source, viewer_id=viewer_id, limit=limit, offset=offset, feed=True
    )
    return orjson.dumps(_page_json(rows, total))


async def feed_response(
    cache: Cache, open_reads: ReadOpener, *, viewer_id: int, limit: int, offset: int
) -> bytes:
    """The reader's feed page, as JSON bytes: cached for them under the list generation and
    their own (app/services/viewer_sets.py), else read and cached."""
    require_reachable(offset, filtered=True)
    generation = await cache.generation(LIST_GENERATION_KEY, name="articles_generation")
    tags = await viewer_sets.personal_tags(cache, viewer_id, generation)
    key = viewer_sets.feed_key(viewer_id, limit, offset)
    if tags is not None:
        stored = await cache.get_raw(key, name="feed")
        cached = viewer_sets.untagged(stored, tags) if stored is not None else None
        if cached is not None:
            return cached
    async with open_reads() as source:
        body = await feed(source, viewer_id=viewer_id, limit=limit, offset=offset)
    if tags is not None:
        await cache.set_raw(key, viewer_sets.tagged(tags, body))
    return body


async def get_article(source: ReadSource, slug: str, viewer_id: int | None) -> Article:
    row = await repo.view_by_slug(source, slug, viewer_id)
    if row is None:
        raise _not_found(slug)
    return presenters.article(row)


def public_article_key(slug: str) -> str:
    return cache_key("article", slug)


ReadOpener = Callable[[], AbstractAsyncContextManager[ReadSource]]


async def _flags(
    cache: Cache, open_reads: ReadOpener, viewer_id: int, articles: list[dict[str, Any]]
) -> viewer_view.Flags:
    """The reader's (favorited, following) for each of `articles` (parsed public bodies): from
    their cached favourites and follows when those can be had (no statement), else one small
    statement for them all."""
    generation = await cache.generation(LIST_GENERATION_KEY, name="articles_generation")
    viewer = await viewer_sets.viewer_set(cache, open_reads, viewer_id, generation)
    if viewer is not None:
        return {a["slug"]: viewer.flags(a["slug"], a["author"]["username"]) for a in articles}
    async with open_reads() as source:
        return await repo.viewer_flags(source, viewer_id, [a["slug"] for a in articles])


async def article_response(
    cache: Cache, open_reads: ReadOpener, slug: str, viewer_id: int | None
) -> bytes:
    """GET one article, as JSON bytes. From the body cached for anonymous readers when there is
    one: as it is for them, with their own flags for a signed-in reader (`_flags`). Otherwise
    read in full (one statement, with the flags) and its public body cached for the next
    reader, whoever that is."""
    key = public_article_key(slug)
    public = await cache.get_raw(key, name="article")
    if public is not None:
        if viewer_id is None:
            return public
        article = orjson.loads(public)["article"]
        flags = await _flags(cache, open_reads, viewer_id, [article])
        if slug in flags:
            return viewer_view.article_body(public, *flags[slug])
        # Deleted since it was cached (its entry goes after the commit): read it as it is now.
    async with open_reads() as source:
        row = await repo.view_by_slug(source, slug, viewer_id)
    if row is None:
        raise _not_found(slug)
    data = {"article": presenters.article_json(row)}
    body = orjson.dumps(data)
    if viewer_id is not None:
        viewer_view.public_article(data["article"])
        public = orjson.dumps(data)
    else:
        public = body
    await cache.set_raw(key, public)
    return body


async def list_response(
    cache: Cache, open_reads: ReadOpener, *, viewer_id: int | None, query: ListQuery
) -> bytes:
    """GET a page of articles, as JSON bytes, from the cached public page as `article_response`
    does."""
    require_reachable(query.offset, filtered=query.filtered)
    generation = await cache.generation(LIST_GENERATION_KEY, name="articles_generation")
    key = public_list_key(generation, query) if generation is not None else None
    public = await cache.get_raw(key, name="articles") if key is not None else None
    if public is not None:
        if viewer_id is None:
            return public
        parsed = orjson.loads(public)
        if not parsed["articles"]:
            return public
        flags = await _flags(cache, open_reads, viewer_id, parsed["articles"])
        return viewer_view.page_body(public, parsed, flags)
    async with open_reads() as source:
        data = await list_articles(source, viewer_id=viewer_id, query=query)
    body = orjson.dumps(data)
    if key is not None:
        if viewer_id is not None:
            for article in data["articles"]:
                viewer_view.public_article(article)
            public = orjson.dumps(data)
        else:
            public = body
        await cache.set_raw(key, public)
    return body


def invalidate_public_articles(session: AsyncSession, cache: Cache, *slugs: str) -> None:
    """After the commit: drop these articles' anonymous bodies and every cached list page."""
    keys = (LIST_GENERATION_KEY, *(public_article_key(slug) for slug in slugs))
    invalidate_after_commit(session, cache, *keys)


LIST_GENERATION_KEY = cache_key("articles", "generation")


def public_list_key(generation: bytes, query: ListQuery) -> str:
    """The cache key of an anonymous list page in list generation `generation` (which usually
    arrives prefetched with the rate limiter's count)."""
    fields = [query.tag, query.author, query.favorited, query.limit, query.offset]
    return cache_key("articles", generation.decode(), orjson.dumps(fields).decode())


def _unique_tags(names: list[str]) -> list[str]:
    return sorted(set(names))


async def create_article(
    session: AsyncSession, cache: Cache, author: User, data: NewArticle
) -> Article:
    for _ in range(SLUG_ATTEMPTS):
        slug = new_slug(data.title)
        inserted = await repo.insert_unless_slug_taken(
            session,
            slug=slug,
            title=data.title,
            description=data.description,
            body=data.body,
            author_id=author.id,
        )
        if inserted is not None:
            break
    else:
        raise ConflictError("title could not be given a unique slug; retry", code="slug_conflict")
    tags = _unique_tags(data.tag_list)
    if tags:
        await repo.set_tags(session, inserted.id, tags, replace=False)
        invalidate_tags(session, cache)
    invalidate_public_articles(session, cache)
    return Article(
        slug=slug,
        title=data.title,
        description=data.description,
        body=data.body,
        tag_list=tags,
        created_at=inserted.created_at,
        updated_at=inserted.updated_at,
        favorited=False,
        favorites_count=0,
        author=presenters.own_profile(author),
    )


async def _owned_article(session: AsyncSession, slug: str, user_id: int) -> ArticleModel:
    article = await repo.get_by_slug(session, slug)
    if article is None:
        raise _not_found(slug)
    if article.author_id != user_id:
        raise ForbiddenError("article belongs to another user", code="not_article_author")
    return article


async def _free_slug(session: AsyncSession, title: str) -> str:
    for _ in range(SLUG_ATTEMPTS):
        slug = new_slug(title)
        if not await repo.slug_exists(session, slug):
            return slug
    raise ConflictError("title could not be given a unique slug; retry", code="slug_conflict")


async def update_article(
    session: AsyncSession, cache: Cache, slug: str, user_id: int, data: UpdateArticle
) -> Article:
    article = await _owned_article(session, slug, user_id)
    invalidate_public_articles(session, cache, slug)
    changes = data.model_dump(exclude_unset=True, exclude_none=True)
    tags = changes.pop("tag_list", None)
    if "title" in changes and changes["title"] != article.title:
        article.slug = await _free_slug(session, changes["title"])
    for field, value in changes.items():
        setattr(article, field, value)
    await repo.save(session, article)
    if tags is not None:
        await repo.set_tags(session, article.id, _unique_tags(tags), replace=True)
        invalidate_tags(session, cache)
    return await get_article(session, article.slug, user_id)


async def delete_article(session: AsyncSession, cache: Cache, slug: str, user_id: int) -> None:
    article = await _owned_article(session, slug, user_id)
    await repo.remove(session, article)
    invalidate_tags(session, cache)
    invalidate_public_articles(session, cache, slug)


async def set_favorite(
    cache: Cache, open_writes: ReadOpener, slug: str, user_id: int, *, favorite: bool
) -> bytes:
    """Favourite or unfavourite, as JSON bytes of the article as the user now sees it.

    One statement on a connection of its own, which commits as it ends
    (`repo.set_favorite`); what anonymous readers see of the article is dropped afterwards.
    """
    async with open_writes() as source:
        row = await repo.set_favorite(source, user_id, slug, favorite=favorite)
    if row is None:
        raise _not_found(slug)
    await cache.delete(LIST_GENERATION_KEY, public_article_key(slug))
    return orjson.dumps({"article": presenters.article_json(row)})
