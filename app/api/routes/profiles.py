"""GET /profiles/{username}, POST and DELETE /profiles/{username}/follow."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import CacheDep, CurrentUserId, OptionalUserId, SessionDep
from app.api.routes.params import Username
from app.schemas.common import error_responses
from app.schemas.profiles import ProfileResponse
from app.services import profiles as service

router = APIRouter(prefix="/profiles", tags=["Profile"], responses=error_responses(401, 404))


@router.get("/{username}", response_model=ProfileResponse, summary="Get a profile")
async def get_profile(
    username: Username, viewer_id: OptionalUserId, session: SessionDep, cache: CacheDep
) -> ProfileResponse:
    return ProfileResponse(profile=await service.get_profile(session, cache, username, viewer_id))


@router.post("/{username}/follow", response_model=ProfileResponse, summary="Follow a user")
async def follow(
    username: Username, viewer_id: CurrentUserId, session: SessionDep, cache: CacheDep
) -> ProfileResponse:
    return ProfileResponse(profile=await service.follow(session, cache, username, viewer_id))


@router.delete("/{username}/follow", response_model=ProfileResponse, summary="Unfollow a user")
async def unfollow(
    username: Username, viewer_id: CurrentUserId, session: SessionDep, cache: CacheDep
) -> ProfileResponse:
    return ProfileResponse(profile=await service.unfollow(session, cache, username, viewer_id))
