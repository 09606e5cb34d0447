"""Profiles and following. The public part of a profile is cached (cache-aside);
`following` depends on the caller and is always read from Postgres."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.error_handlers import NotFoundError, ValidationFailedError
from app.db.cache import Cache, cache_key, invalidate_after_commit
from app.repositories import users as users_repo
from app.schemas.profiles import Profile
from app.services.viewer_sets import forget_viewer_after_commit


def _key(username: str) -> str:
    return cache_key("profile", username)


async def _public_profile(session: AsyncSession, cache: Cache, username: str) -> dict[str, Any]:
    async def load() -> dict[str, Any] | None:
        user = await users_repo.get_by_username(session, username)
        if user is None:
            return None
        return {"id": user.id, "username": user.username, "bio": user.bio, "image": user.image}

    found: dict[str, Any] | None = await cache.get_or_load(_key(username), load, name="profile")
    if found is None:
        raise NotFoundError(f"profile {username} not found", code="profile_not_found")
    return found


def _profile(public: dict[str, Any], following: bool) -> Profile:
    return Profile(
        username=public["username"], bio=public["bio"], image=public["image"], following=following
    )


async def get_profile(
    session: AsyncSession, cache: Cache, username: str, viewer_id: int | None
) -> Profile:
    public = await _public_profile(session, cache, username)
    following = (
        viewer_id is not None
        and viewer_id != public["id"]
        and await users_repo.is_following(session, viewer_id, public["id"])
    )
    return _profile(public, following)


async def follow(session: AsyncSession, cache: Cache, username: str, viewer_id: int) -> Profile:
    public = await _public_profile(session, cache, username)
    if public["id"] == viewer_id:
        raise ValidationFailedError("username cannot be followed by yourself")
    await users_repo.follow(session, viewer_id, public["id"])
    forget_viewer_after_commit(session, cache, viewer_id)
    return _profile(public, True)


async def unfollow(session: AsyncSession, cache: Cache, username: str, viewer_id: int) -> Profile:
    public = await _public_profile(session, cache, username)
    await users_repo.unfollow(session, viewer_id, public["id"])
    forget_viewer_after_commit(session, cache, viewer_id)
    return _profile(public, False)


def invalidate_profile(session: AsyncSession, cache: Cache, *usernames: str) -> None:
    invalidate_after_commit(session, cache, *{_key(name) for name in usernames})
