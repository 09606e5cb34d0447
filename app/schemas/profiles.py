"""Profile envelope."""

from __future__ import annotations

from pydantic import BaseModel


class Profile(BaseModel):
    username: str
    bio: str | None
    image: str | None
    following: bool


class ProfileResponse(BaseModel):
    profile: Profile
