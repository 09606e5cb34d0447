"""POST /users, POST /users/login, GET /user, PUT /user."""

from __future__ import annotations

import functools

from fastapi import APIRouter, status

from app.api.deps import (
    CacheDep,
    CurrentUser,
    ResourcesDep,
    SessionDep,
    SettingsDep,
    open_session,
)
from app.resilience.login_throttle import LoginThrottle
from app.schemas.common import error_responses
from app.schemas.users import LoginUserRequest, NewUserRequest, UpdateUserRequest, UserResponse
from app.services import users as service

router = APIRouter(tags=["User and Authentication"])


@router.post(
    "/users/login",
    response_model=UserResponse,
    summary="Log in",
    responses=error_responses(401, 429, 503),
)
async def login(
    payload: LoginUserRequest, settings: SettingsDep, resources: ResourcesDep
) -> UserResponse:
    # No session dependency: the service opens its sessions around the lookup and the rehash
    # only, so no connection is held while the password is checked.
    credentials = payload.user
    throttle = LoginThrottle(resources.rate_limiter)
    sessions = functools.partial(open_session, resources)
    user = await service.login(
        sessions, credentials.email, credentials.password, settings, throttle
    )
    return UserResponse(user=user)


@router.post(
    "/users",
    response_model=UserResponse,
    status_code=status.HTTP_201_CREATED,
    summary="Register",
)
async def register(
    payload: NewUserRequest, session: SessionDep, settings: SettingsDep
) -> UserResponse:
    return UserResponse(user=await service.register(session, payload.user, settings))


@router.get(
    "/user", response_model=UserResponse, summary="Current user", responses=error_responses(401)
)
async def current_user(user: CurrentUser, settings: SettingsDep) -> UserResponse:
    return UserResponse(user=service.issue_token(user, settings))


@router.put(
    "/user", response_model=UserResponse, summary="Update user", responses=error_responses(401)
)
async def update_user(
    payload: UpdateUserRequest,
    user: CurrentUser,
    session: SessionDep,
    cache: CacheDep,
    settings: SettingsDep,
    resources: ResourcesDep,
) -> UserResponse:
    updated = await service.update(
        session, cache, user, payload.user, settings, resources.token_versions
    )
    return UserResponse(user=updated)
