"""Articles: lists, feed, CRUD and favourites."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from app.api.deps import (
    CacheDep,
    CurrentUser,
    CurrentUserId,
    OptionalUserId,
    SessionDep,
    get_cache,
    read_connection,
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
    cache = await get_cache(request)
    key = None
    if viewer_id is None:
        # Anonymous: the page may be cached, as the body this route would render.
        key = await service.public_list_key(
            cache, tag=tag, author=author, favorited=favorited, limit=limit, offset=offset
        )
        body = await cache.get_raw(key) if key is not None else None
        if body is not None:
            return Response(body, media_type="application/json")
    async with read_connection(request) as connection:
        page = await service.list_articles(
            connection,
            viewer_id=viewer_id,
            tag=tag,
            author=author,
            favorited=favorited,
            limit=limit,
            offset=offset,
        )
    if key is not None:
        await cache.set(key, page.model_dump(mode="json", by_alias=True))
    return page


@router.get("/feed", response_model=ArticleListResponse, summary="Articles by followed authors")
async def feed(
    request: Request, viewer_id: CurrentUserId, limit: Limit = 20, offset: Offset = 0
) -> ArticleListResponse:
    async with read_connection(request) as connection:
        return await service.feed(connection, viewer_id=viewer_id, limit=limit, offset=offset)


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
    cache = await get_cache(request)
    if viewer_id is None:
        # An anonymous read: the cached body is what this route would render, sent as it is.
        body = await service.cached_public_article(cache, slug)
        if body is not None:
            return Response(body, media_type="application/json")
    async with read_connection(request) as connection:
        article = await service.get_article(connection, slug, viewer_id)
    if viewer_id is None:
        await service.remember_public_article(cache, article)
    return ArticleResponse(article=article)


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
async def favorite(
    slug: Slug, user_id: CurrentUserId, session: SessionDep, cache: CacheDep
) -> ArticleResponse:
    return ArticleResponse(article=await service.favorite(session, cache, slug, user_id))


@router.delete(
    "/{slug}/favorite",
    response_model=ArticleResponse,
    summary="Unfavourite an article",
    responses=error_responses(404),
)
async def unfavorite(
    slug: Slug, user_id: CurrentUserId, session: SessionDep, cache: CacheDep
) -> ArticleResponse:
    return ArticleResponse(article=await service.unfavorite(session, cache, slug, user_id))
