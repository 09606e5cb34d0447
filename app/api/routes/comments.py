"""Comments on an article."""

from __future__ import annotations

import functools

from fastapi import APIRouter, Request, Response, status

from app.api.deps import (
    CurrentUserId,
    OptionalUserId,
    SessionDep,
    read_connection,
    remember_writer,
    write_connection,
)
from app.api.routes.params import CommentId, Slug
from app.schemas.comments import CommentListResponse, CommentResponse, NewCommentRequest
from app.schemas.common import error_responses
from app.services import comments as service

router = APIRouter(
    prefix="/articles/{slug}/comments", tags=["Comments"], responses=error_responses(401, 404)
)


@router.get("", response_model=CommentListResponse, summary="Comments, newest first")
async def list_comments(slug: Slug, viewer_id: OptionalUserId, request: Request) -> Response:
    async with read_connection(request, viewer_id) as connection:
        comments = await service.list_comments(connection, slug, viewer_id)
    return Response(comments, media_type="application/json")


@router.post("", response_model=CommentResponse, summary="Comment on an article")
async def add_comment(
    slug: Slug, payload: NewCommentRequest, user_id: CurrentUserId, request: Request
) -> Response:
    comment = await service.add_comment(
        functools.partial(write_connection, request), slug, user_id, payload.comment.body
    )
    await remember_writer(request)
    return Response(comment, media_type="application/json")


@router.delete(
    "/{comment_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a comment (its author only)",
    responses=error_responses(403),
)
async def delete_comment(
    slug: Slug, comment_id: CommentId, user_id: CurrentUserId, session: SessionDep
) -> Response:
    await service.delete_comment(session, slug, comment_id, user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
