"""POST /uploads (authenticated image upload) and GET <UPLOAD_URL_PREFIX>/<name> (serving).

The upload endpoint reads the raw request stream itself instead of declaring an UploadFile, so
the body is checked while it arrives (size, image bytes) rather than spooled in full first.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import StreamingResponse

from app.api.deps import CurrentUser, ResourcesDep
from app.core.error_handlers import BadRequestError, NotFoundError
from app.schemas.common import error_responses
from app.schemas.uploads import UploadResponse
from app.services.storage import IMMUTABLE, ImageStorage, is_valid_name
from app.services.uploads import FIELD, TYPES_BY_EXTENSION, UploadService

router = APIRouter(tags=["Uploads"])
files_router = APIRouter(tags=["Uploads"])

# Defence in depth: should a stored file ever be rendered as a document (a polyglot, a browser
# that ignores nosniff), it runs no script, loads nothing and gets a unique origin.
IMAGE_CSP = "default-src 'none'; sandbox"

MULTIPART_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FIELD],
                    "properties": {FIELD: {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


def get_image_storage(resources: ResourcesDep) -> ImageStorage:
    return resources.image_storage


ImageStorageDep = Annotated[ImageStorage, Depends(get_image_storage)]


def get_upload_service(resources: ResourcesDep, storage: ImageStorageDep) -> UploadService:
    settings = resources.settings
    return UploadService(storage, settings.UPLOAD_MAX_BYTES, settings.UPLOAD_MAX_PIXELS)


def _content_length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    if not raw.isdigit():
        raise BadRequestError("Content-Length must be a number")
    return int(raw)


@router.post(
    "/uploads",
    status_code=201,
    response_model=UploadResponse,
    summary="Upload a PNG, JPEG, GIF or WebP image (multipart field `file`)",
    openapi_extra=MULTIPART_BODY,
    responses=error_responses(400, 401, 413, 415, 422, 503),
)
async def upload_image(
    request: Request,
    _: CurrentUser,
    uploads: Annotated[UploadService, Depends(get_upload_service)],
) -> UploadResponse:
    stored = await uploads.store(
        request.headers.get("content-type"), _content_length(request), request.stream()
    )
    return UploadResponse(url=stored.url)


@files_router.get(
    "/{name}",
    response_class=StreamingResponse,
    summary="A stored image, byte for byte",
    responses={200: {"content": {"image/*": {}}}, **error_responses(404, 503)},
)
async def serve_image(
    name: str,
    storage: ImageStorageDep,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    size = await storage.size(name) if is_valid_name(name) else None
    if size is None:
        raise NotFoundError("image not found")
    digest, extension = name.split(".")
    headers = {
        "Cache-Control": IMMUTABLE,
        "ETag": f'"{digest}"',
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": IMAGE_CSP,
        # The content address, never a client's file name: nothing in it needs quoting.
        "Content-Disposition": f'inline; filename="{name}"',
    }
    if if_none_match and f'"{digest}"' in if_none_match:
        return Response(status_code=304, headers=headers)
    headers["Content-Length"] = str(size)
    return StreamingResponse(
        storage.read(name),
        media_type=TYPES_BY_EXTENSION[extension].content_type,
        headers=headers,
    )
