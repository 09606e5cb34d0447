"""GET /tags."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import CacheDep, LazyReadSession
from app.schemas.tags import TagsResponse
from app.services import tags as service

router = APIRouter(tags=["Tags"])


@router.get("/tags", response_model=TagsResponse, summary="Tags in use, most used first")
async def list_tags(open_session: LazyReadSession, cache: CacheDep) -> TagsResponse:
    return TagsResponse(tags=await service.popular_tags(open_session, cache))
