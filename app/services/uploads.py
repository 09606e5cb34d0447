"""Image uploads: stream a multipart body to a staged file, hashing as it arrives, and publish it
under its content hash.

Memory stays flat whatever the client sends: body chunks go through python-multipart's push
parser straight into the staged file (writes and hashing in a worker thread), a body larger than
the limit is refused with 413 as soon as the count passes it (or at once when Content-Length
says so), and a part whose first bytes are not PNG, JPEG, GIF or WebP is refused with 415 before
the rest is read. The client's file name and content type are ignored.

What is published is not the upload itself but a copy without its metadata (EXIF and its GPS
position, XMP, comments: app/services/image_metadata.py), made from the staged file into a
second one in a worker thread; its hash is the name, so the same picture is still stored once.
An image declaring more than UPLOAD_MAX_PIXELS pixels is refused with 422, from the first
64 KiB when its dimensions are there (they are in the first bytes of PNG, GIF and WebP).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from app.core.error_handlers import (
    BadRequestError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
    ValidationFailedError,
)
from app.core.logging_config import get_logger
from app.services.image_metadata import ImageInfo, check_head, strip_metadata
from app.services.storage import ImageStorage

FIELD = "file"
# Room for the multipart boundaries and part headers around the file itself.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
SNIFF_BYTES = 12
# Enough for the dimensions of any PNG, GIF or WebP, and of most JPEGs (after their EXIF).
HEAD_CHECK_BYTES = 64 * 1024

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ImageType:
    extension: str
    content_type: str


PNG = ImageType("png", "image/png")
JPEG = ImageType("jpg", "image/jpeg")
GIF = ImageType("gif", "image/gif")
WEBP = ImageType("webp", "image/webp")
TYPES_BY_EXTENSION = {kind.extension: kind for kind in (PNG, JPEG, GIF, WEBP)}


def sniff_image(head: bytes) -> ImageType | None:
    """The image type announced by the file's magic bytes, None for anything else."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith((b"GIF87a", b"GIF89a")):
        return GIF
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    return None


@dataclass(frozen=True, slots=True)
class StoredImage:
    name: str
    url: str
    size: int
    image_type: ImageType


class _FileField:
    """Push-parses multipart chunks; hands back the bytes of the one `file` part."""

    def __init__(self, boundary: bytes) -> None:
        self.found = False
        self.complete = False
        self._in_file = False
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self._data: list[bytes] = []
        self._parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value_data,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
        )

    def feed(self, chunk: bytes) -> bytes:
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise BadRequestError("body is not valid multipart/form-data") from exc
        data = b"".join(self._data)
        self._data.clear()
        return data

    def _part_begin(self) -> None:
        self._disposition = b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name.extend(data[start:end])

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value.extend(data[start:end])

    def _header_end(self) -> None:
        if bytes(self._header_name).lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._in_file = options.get(b"name") == FIELD.encode()
        if self._in_file:
            if self.found:
                raise ValidationFailedError("file must be sent once")
            self.found = True

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._data.append(data[start:end])

    def _part_end(self) -> None:
        self._in_file = False

    def _end(self) -> None:
        self.complete = True


class _CountingWriter:
    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.size = 0

    def write(self, data: bytes) -> None:
        self.handle.write(data)
        self.size += len(data)


class _HashingWriter(_CountingWriter):
    def __init__(self, handle: IO[bytes]) -> None:
        super().__init__(handle)
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> None:
        super().write(data)
        self.digest.update(data)


def multipart_boundary(content_type: str | None) -> bytes:
    media_type, options = parse_options_header(content_type)
    if media_type != b"multipart/form-data":
        raise UnsupportedMediaTypeError(f"send the image as multipart/form-data field '{FIELD}'")
    boundary = options.get(b"boundary")
    if not boundary:
        raise BadRequestError("multipart/form-data without a boundary")
    return boundary


class UploadService:
    def __init__(self, storage: ImageStorage, max_bytes: int, max_pixels: int) -> None:
        self.storage = storage
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.max_body_bytes = max_bytes + MULTIPART_OVERHEAD_BYTES

    def _too_large(self) -> PayloadTooLargeError:
        return PayloadTooLargeError(f"file must be at most {self.max_bytes} bytes")

    async def store(
        self, content_type: str | None, content_length: int | None, body: AsyncIterator[bytes]
    ) -> StoredImage:
        field = _FileField(multipart_boundary(content_type))
        if content_length is not None and content_length > self.max_body_bytes:
            raise self._too_large()
        # Before the body is read: a client whose upload cannot be stored is told at once.
        self.storage.raise_if_unavailable()
        staged, handle = await asyncio.to_thread(self.storage.staging_file)
        try:
            received = _CountingWriter(handle)
            image_type = await self._receive(field, body, received)
            await asyncio.to_thread(handle.close)
            name, size = await self._publish_stripped(staged, image_type, received.size)
        finally:
            await asyncio.to_thread(_discard, handle, staged)
        return StoredImage(name, await self.storage.url(name), size, image_type)

    async def _publish_stripped(
        self, staged: Path, image_type: ImageType, received: int
    ) -> tuple[str, int]:
        """Copy the staged upload without its metadata, publish the copy under its hash; the
        name and the size published."""
        cleaned, handle = await asyncio.to_thread(self.storage.staging_file)
        try:
            writer = _HashingWriter(handle)
            info = await asyncio.to_thread(self._strip, staged, image_type, writer)
            _log_stripped(image_type, info, received, writer.size)
            name = f"{writer.digest.hexdigest()}.{image_type.extension}"
            await self.storage.publish(cleaned, name)
        finally:
            await asyncio.to_thread(_discard, handle, cleaned)
        return name, writer.size

    def _strip(self, staged: Path, image_type: ImageType, writer: _HashingWriter) -> ImageInfo:
        with staged.open("rb") as source:
            info = strip_metadata(image_type.extension, source, writer.write, self.max_pixels)
        writer.handle.close()
        return info

    async def _receive(
        self, field: _FileField, body: AsyncIterator[bytes], writer: _CountingWriter
    ) -> ImageType:
        received = 0
        head = b""
        image_type: ImageType | None = None
        async for chunk in body:
            received += len(chunk)
            if received > self.max_body_bytes:
                raise self._too_large()
            data = field.feed(chunk)
            if not data:
                continue
            if writer.size + len(data) > self.max_bytes:
                raise self._too_large()
            if len(head) < HEAD_CHECK_BYTES:
                head += data[: HEAD_CHECK_BYTES - len(head)]
                if image_type is None and len(head) >= SNIFF_BYTES:
                    image_type = _require_image(head)
                if image_type is not None and len(head) >= HEAD_CHECK_BYTES:
                    # Refused here, a bomb's declared size costs 64 KiB of its body, not all.
                    await asyncio.to_thread(check_head, image_type.extension, head, self.max_pixels)
            await asyncio.to_thread(writer.write, data)
        if not field.complete:
            raise BadRequestError("multipart body ended early")
        if not field.found or writer.size == 0:
            raise ValidationFailedError(f"{FIELD} can't be blank")
        return image_type or _require_image(head)


def _require_image(head: bytes) -> ImageType:
    image_type = sniff_image(head)
    if image_type is None:
        raise UnsupportedMediaTypeError("file must be a PNG, JPEG, GIF or WebP image")
    return image_type


def _log_stripped(image_type: ImageType, info: ImageInfo, received: int, stored: int) -> None:
    if stored != received:
        log.info(
            "upload_metadata_stripped",
            image_type=image_type.extension,
            width=info.width,
            height=info.height,
            frames=info.frames,
            bytes_removed=received - stored,
        )


def _discard(handle: IO[bytes], staged: Path) -> None:
    """Drop what is left of the staged file (nothing after a successful publish)."""
    handle.close()
    staged.unlink(missing_ok=True)
