"""An app built from given settings, served over httpx's ASGI transport with its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from asgi_lifespan import LifespanManager
from fastapi import APIRouter, FastAPI
from httpx import ASGITransport, AsyncClient

from app.core.config import Settings


@asynccontextmanager
async def serve(settings: Settings, *routers: APIRouter) -> AsyncIterator[AsyncClient]:
    """Yield a client for `create_app(settings)`; `routers` are test-only additions."""
    from app.main import create_app

    application: FastAPI = create_app(settings)
    for router in routers:
        application.include_router(router)
    async with LifespanManager(application, startup_timeout=60, shutdown_timeout=30):
        transport = ASGITransport(app=application, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://testserver") as http:
            http.app = application  # type: ignore[attr-defined]
            yield http
