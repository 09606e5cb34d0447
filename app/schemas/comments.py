"""Comment envelopes."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, StringConstraints

from app.schemas.common import CamelModel, NonBlankStr, Timestamp
from app.schemas.profiles import Profile


class NewComment(BaseModel):
    body: Annotated[NonBlankStr, StringConstraints(max_length=20_000)]


class NewCommentRequest(BaseModel):
    comment: NewComment


class Comment(CamelModel):
    id: int
    created_at: Timestamp
    updated_at: Timestamp
    body: str
    author: Profile


class CommentResponse(BaseModel):
    comment: Comment


class CommentListResponse(BaseModel):
    comments: list[Comment]
