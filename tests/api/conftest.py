"""Fixtures shared by the API tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from app.services.storage import DiskImageStorage


@pytest.fixture
def upload_dir(app: FastAPI, tmp_path: Path) -> Iterator[Path]:
    """Uploads of this test land in its own directory (the app's storage, pointed elsewhere)."""
    resources = app.state.resources
    original = resources.image_storage
    resources.image_storage = DiskImageStorage(tmp_path)
    yield tmp_path
    resources.image_storage = original
