"""Fixtures shared by the API tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.core.config import Settings
from app.main import create_app
from app.services.storage import DiskImageStorage


@pytest.fixture
def upload_dir(app: FastAPI, tmp_path: Path) -> Iterator[Path]:
    """Uploads of this test land in its own directory (the app's storage, pointed elsewhere)."""
    resources = app.state.resources
    original = resources.image_storage
    resources.image_storage = DiskImageStorage(tmp_path)
    yield tmp_path
    resources.image_storage = original


LIMITS = {
    "RATE_LIMIT_ENABLED": True,
    "RATE_LIMIT_DEFAULT": "5/minute",
    "RATE_LIMIT_WRITE": "4/minute",
    "RATE_LIMIT_LOGIN": "2/minute",
    "RATE_LIMIT_REGISTER": "2/minute",
}


@pytest.fixture
async def limited_app(settings_factory: Callable[..., Settings]) -> AsyncIterator[FastAPI]:
    application = create_app(settings_factory(**LIMITS))
    async with LifespanManager(application):
        redis = application.state.resources.redis
        await redis.client.flushdb()
        yield application
