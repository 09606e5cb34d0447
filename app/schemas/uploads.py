"""Upload response."""

from __future__ import annotations

from pydantic import BaseModel, Field


class UploadResponse(BaseModel):
    url: str = Field(description="Where the stored image is served; usable as a user's `image`")
