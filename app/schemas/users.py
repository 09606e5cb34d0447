"""User request and response envelopes."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, EmailStr, Field, StringConstraints

from app.schemas.common import NonBlankStr, SafeStr

USERNAME_PATTERN = r"^[A-Za-z0-9_.-]+$"


def _lower(value: str) -> str:
    return value.lower()


Email = Annotated[EmailStr, Field(max_length=254), AfterValidator(_lower)]
Username = Annotated[
    NonBlankStr, StringConstraints(min_length=1, max_length=64, pattern=USERNAME_PATTERN)
]
Password = Annotated[SafeStr, StringConstraints(min_length=8, max_length=256)]
LoginPassword = Annotated[SafeStr, StringConstraints(min_length=1, max_length=256)]
Bio = Annotated[SafeStr, StringConstraints(max_length=2000)]
ImageUrl = Annotated[SafeStr, StringConstraints(max_length=2048)]


class NewUser(BaseModel):
    username: Username
    email: Email
    password: Password


class NewUserRequest(BaseModel):
    user: NewUser


class LoginUser(BaseModel):
    email: Annotated[SafeStr, StringConstraints(min_length=1, max_length=254)]
    password: LoginPassword


class LoginUserRequest(BaseModel):
    user: LoginUser


class UpdateUser(BaseModel):
    email: Email | None = None
    username: Username | None = None
    password: Password | None = None
    bio: Bio | None = None
    image: ImageUrl | None = None


class UpdateUserRequest(BaseModel):
    user: UpdateUser


class User(BaseModel):
    email: str
    token: str
    username: str
    bio: str | None
    image: str | None


class UserResponse(BaseModel):
    user: User
