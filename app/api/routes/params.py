"""Path and query parameters shared by the routers, bounded so hostile input is a 422."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from app.schemas.common import SafeStr

MAX_PAGE_SIZE = 100
MAX_OFFSET = 10_000_000
INT64_MAX = 2**63 - 1

Slug = Annotated[SafeStr, Path(max_length=255, description="The article's slug")]
Username = Annotated[SafeStr, Path(max_length=64, description="A username")]
CommentId = Annotated[int, Path(ge=1, le=INT64_MAX, description="The comment's id")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description=f"Page size (1-{MAX_PAGE_SIZE})")]
Offset = Annotated[
    int,
    Query(
        ge=0,
        le=MAX_OFFSET,
        description="Articles to skip (at most 10,000 with a filter and in the feed)",
    ),
]
TagFilter = Annotated[SafeStr | None, Query(max_length=64, description="Filter by tag")]
AuthorFilter = Annotated[SafeStr | None, Query(max_length=64, description="Filter by author")]
FavoritedFilter = Annotated[
    SafeStr | None, Query(max_length=64, description="Filter by a user's favourites")
]
