"""The Conduit API's resource routers, and the error responses all of them share."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI

from app.api.routes import articles, comments, profiles, tags, uploads, users
from app.schemas.common import error_responses

RESOURCE_ROUTERS: tuple[APIRouter, ...] = (
    users.router,
    profiles.router,
    articles.router,
    comments.router,
    tags.router,
    uploads.router,
)


def include_api_routers(app: FastAPI, prefix: str) -> None:
    """Each resource router straight under the app, with the API prefix.

    Not one API router that includes them: since FastAPI 0.16x an included router is matched
    lazily, level by level (and twice: to select, then to handle), so every level of nesting
    costs each request another pass over its routes. One level is the least the prefix needs.
    """
    shared: dict[int | str, dict[str, Any]] = error_responses(400, 422, 429, 500, 503)
    for router in RESOURCE_ROUTERS:
        app.include_router(router, prefix=prefix, responses=shared)
