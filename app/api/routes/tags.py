"""GET /tags."""

from __future__ import annotations

import functools

from fastapi import APIRouter, Request, Response

from app.api.deps import get_cache, open_session, resources_of
from app.api.plain_route import PlainRequestRoute
from app.schemas.tags import TagsResponse
from app.services import tags as service

router = APIRouter(tags=["Tags"])


async def list_tags(request: Request) -> Response:
    # Every RealWorld page load asks for the tag cloud: the cached body goes out as it is,
    # through a route without FastAPI's handler (it takes no input; see PlainRequestRoute).
    body = await service.tags_response(
        functools.partial(open_session, resources_of(request), read_only=True),
        await get_cache(request),
    )
    return Response(body, media_type="application/json")


router.add_api_route(
    "/tags",
    list_tags,
    methods=["GET"],
    response_model=TagsResponse,
    summary="Tags in use, most used first",
    route_class_override=PlainRequestRoute,
)
