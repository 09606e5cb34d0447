"""Articles: lists, feed, CRUD and favourites."""

from __future__ import annotations

import functools

from fastapi import APIRouter, Request, Response, status

from app.api.deps import (
    CacheDep,
    CurrentUser,
    CurrentUserId,
    OptionalUserId,
    SessionDep,
    get_cache,
    read_connection,
    remember_writer,
    write_connection,
)
from app.api.routes.params import AuthorFilter, FavoritedFilter, Limit, Offset, Slug, TagFilter
from app.schemas.articles import (
    ArticleListResponse,
    ArticleResponse,
    NewArticleRequest,
    UpdateArticleRequest,
)
from app.schemas.common import error_responses
from app.services import articles as service

router = APIRouter(prefix="/articles", tags=["Articles"], responses=error_responses(401))


def _as_sent(body: bytes) -> Response:
    """A rendered body (JSON bytes, what the route's response model would render) as it is."""
    return Response(body, media_type="application/json")


@router.get("", response_model=ArticleListResponse, summary="List articles, newest first")
async def list_articles(
    request: Request,
    viewer_id: OptionalUserId,
    tag: TagFilter = None,
    author: AuthorFilter = None,
    favorited: FavoritedFilter = None,
    limit: Limit = 20,
    offset: Offset = 0,
) -> ArticleListResponse | Response:
    page = await service.list_response(
        await get_cache(request),
        functools.partial(read_connection, request, viewer_id),
        viewer_id=viewer_id,
        query=service.ListQuery(
            tag=tag, author=author, favorited=favorited, limit=limit, offset=offset
        ),
    )
    return _as_sent(page)


@router.get("/feed", response_model=ArticleListResponse, summary="Articles by followed authors")
async def feed(
    request: Request, viewer_id: CurrentUserId, limit: Limit = 20, offset: Offset = 0
) -> Response:
    page = await service.feed_response(
        await get_cache(request),
        functools.partial(read_connection, request, viewer_id),
        viewer_id=viewer_id,
        limit=limit,
        offset=offset,
    )
    return _as_sent(page)


@router.post(
    "",
    response_model=ArticleResponse,
    status_code=status.HTTP_201_CREATED,
    summary="Create an article",
)
async def create_article(
    payload: NewArticleRequest, user: CurrentUser, session: SessionDep, cache: CacheDep
) -> ArticleResponse:
    article = await service.create_article(session, cache, user, payload.article)
    return ArticleResponse(article=article)


@router.get(
    "/{slug}",
    response_model=ArticleResponse,
    summary="Get an article",
    responses=error_responses(404),
)
async def get_article(
    slug: Slug, viewer_id: OptionalUserId, request: Request
) -> ArticleResponse | Response:
    article = await service.article_response(
        await get_cache(request),
        functools.partial(read_connection, request, viewer_id),
        slug,
        viewer_id,
    )
    return _as_sent(article)


@router.put(
    "/{slug}",
    response_model=ArticleResponse,
    summary="Update an article (its author only)",
    responses=error_responses(403, 404),
)
async def update_article(
    slug: Slug,
    payload: UpdateArticleRequest,
    user_id: CurrentUserId,
    session: SessionDep,
    cache: CacheDep,
) -> ArticleResponse:
    article = await service.update_article(session, cache, slug, user_id, payload.article)
    return ArticleResponse(article=article)


@router.delete(
    "/{slug}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete an article (its author only)",
    responses=error_responses(403, 404),
)
async def delete_article(
    slug: Slug, user_id: CurrentUserId, session: SessionDep, cache: CacheDep
) -> Response:
    await service.delete_article(session, cache, slug, user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{slug}/favorite",
    response_model=ArticleResponse,
    summary="Favourite an article",
    responses=error_responses(404),
)
async def favorite(slug: Slug, user_id: CurrentUserId, request: Request) -> Response:
    return await _set_favorite(request, slug, user_id, favorite=True)


@router.delete(
    "/{slug}/favorite",
    response_model=ArticleResponse,
    summary="Unfavourite an article",
    responses=error_responses(404),
)
async def unfavorite(slug: Slug, user_id: CurrentUserId, request: Request) -> Response:
    return await _set_favorite(request, slug, user_id, favorite=False)


async def _set_favorite(request: Request, slug: str, user_id: int, *, favorite: bool) -> Response:
    article = await service.set_favorite(
        await get_cache(request),
        functools.partial(write_connection, request),
        slug,
        user_id,
        favorite=favorite,
    )
    await remember_writer(request)
    return _as_sent(article)
