"""The Conduit API router: every resource router, with the error responses all of them share."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.routes import articles, comments, profiles, tags, uploads, users
from app.schemas.common import error_responses


def build_api_router() -> APIRouter:
    router = APIRouter(responses=error_responses(400, 422, 429, 500, 503))
    for module in (users, profiles, articles, comments, tags, uploads):
        router.include_router(module.router)
    return router
