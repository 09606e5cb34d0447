"""POST /users, POST /users/login, GET /user, PUT /user."""

from __future__ import annotations

from fastapi import APIRouter, status

from app.api.deps import CacheDep, CurrentUser, SessionDep, SettingsDep
from app.schemas.common import error_responses
from app.schemas.users import LoginUserRequest, NewUserRequest, UpdateUserRequest, UserResponse
from app.services import users as service

router = APIRouter(tags=["User and Authentication"])


@router.post(
    "/users/login",
    response_model=UserResponse,
    summary="Log in",
    responses=error_responses(401),
)
async def login(
    payload: LoginUserRequest, session: SessionDep, settings: SettingsDep
) -> UserResponse:
    user = await service.login(session, payload.user.email, payload.user.password, settings)
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
) -> UserResponse:
    return UserResponse(user=await service.update(session, cache, user, payload.user, settings))
