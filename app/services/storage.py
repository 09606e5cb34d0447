"""Where uploaded images live: a small interface, its local-disk implementation, and the choice
between it and the S3 one (app/services/s3_storage.py) made by UPLOAD_STORAGE.

Names are content addresses (`<sha256>.<ext>`) chosen by the upload service; no name from a
client reaches the file system, and `is_valid_name` is checked again before any lookup.
`staging_file` gives a local scratch file to stream into, `publish` moves it to its final name
(uploads it, for a store), `url` says where a client fetches it. `check` and `describe` are what
`/health/detailed` reports; a failing store is never part of readiness (uploads are one feature).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

from app.core.error_handlers import ServiceUnavailableError

if TYPE_CHECKING:
    from app.core.config import Settings
    from app.resilience.circuit_breaker import CircuitBreaker

NAME_PATTERN = re.compile(r"^[0-9a-f]{64}\.(png|jpg|gif|webp)$")
READ_CHUNK_BYTES = 64 * 1024
CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg", "gif": "image/gif", "webp": "image/webp"}
# Content-addressed, so a name's bytes never change.
IMMUTABLE = "public, max-age=31536000, immutable"
STORAGE_RETRY_AFTER_SECONDS = 5


class StorageUnavailableError(ServiceUnavailableError):
    code, message = "storage_unavailable", "Image storage is unavailable; retry shortly"


class StorageCheckError(Exception):
    """The storage failed its health check; the message says why, in words, never credentials."""


def is_valid_name(name: str) -> bool:
    return NAME_PATTERN.fullmatch(name) is not None


class ImageStorage(Protocol):
    async def start(self) -> None:
        """Open what the storage needs (called once in the lifespan)."""

    async def close(self) -> None:
        """Release it (called once at shutdown)."""

    def staging_file(self) -> tuple[Path, IO[bytes]]:
        """A new, empty scratch file (blocking: call it from a worker thread)."""

    async def publish(self, staged: Path, name: str) -> None:
        """Store the staged file under `name` (idempotent: same name, same bytes)."""

    async def size(self, name: str) -> int | None:
        """Size in bytes of a stored image, None when there is none by that name."""

    def read(self, name: str) -> AsyncIterator[bytes]:
        """The stored bytes, in chunks."""

    async def url(self, name: str) -> str:
        """Where a client fetches the stored image."""

    def raise_if_unavailable(self) -> None:
        """Refuse an upload before its body is read when the storage is known to be down."""

    async def check(self) -> dict[str, object]:
        """One cheap round trip proving the storage usable (facts it measured); raises
        StorageCheckError."""

    def describe(self) -> dict[str, object]:
        """Where the images go and the storage's own state, for operators (no credentials)."""


class DiskStaging:
    """Scratch files under `<root>/.incoming`, where uploads stream in before publishing."""

    def __init__(self, root: Path) -> None:
        self.dir = root.resolve() / ".incoming"

    def new_file(self) -> tuple[Path, IO[bytes]]:
        self.dir.mkdir(parents=True, exist_ok=True)
        descriptor, path = tempfile.mkstemp(dir=self.dir, suffix=".part")
        return Path(path), os.fdopen(descriptor, "wb")


class DiskImageStorage:
    def __init__(self, root: str | Path, url_prefix: str = "/uploads") -> None:
        self.root = Path(root).resolve()
        self.staging = DiskStaging(self.root)
        self.url_prefix = url_prefix.rstrip("/")

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _path(self, name: str) -> Path:
        if not is_valid_name(name):
            raise ValueError("not a stored image name")
        return self.root / name

    def staging_file(self) -> tuple[Path, IO[bytes]]:
        # Staged next to the final files so publishing is an atomic rename on one file system.
        return self.staging.new_file()

    async def publish(self, staged: Path, name: str) -> None:
        target = self._path(name)

        def move() -> None:
            staged.chmod(0o644)
            os.replace(staged, target)

        await asyncio.to_thread(move)

    async def size(self, name: str) -> int | None:
        if not is_valid_name(name):
            return None
        path = self._path(name)
        try:
            stat = await asyncio.to_thread(path.stat)
        except FileNotFoundError:
            return None
        return stat.st_size

    async def read(self, name: str) -> AsyncIterator[bytes]:
        handle = await asyncio.to_thread(self._path(name).open, "rb")
        try:
            while chunk := await asyncio.to_thread(handle.read, READ_CHUNK_BYTES):
                yield chunk
        finally:
            await asyncio.to_thread(handle.close)

    async def url(self, name: str) -> str:
        return f"{self.url_prefix}/{name}"

    def raise_if_unavailable(self) -> None:
        return None  # no breaker: a local disk answers, or fails, at once

    async def check(self) -> dict[str, object]:
        return await asyncio.to_thread(self._check_writable)

    def _check_writable(self) -> dict[str, object]:
        # What an upload does first (a scratch file), and what publishing needs (the directory
        # writable): a read-only mount or a wrong owner shows here, not at the next upload.
        try:
            path, handle = self.staging.new_file()
            handle.close()
            path.unlink()
            if not os.access(self.root, os.W_OK):
                raise PermissionError(f"no write permission on {self.root}")
            free = shutil.disk_usage(self.root).free
        except OSError as exc:
            raise StorageCheckError(f"{self.root} is not writable: {exc}") from exc
        return {"writable": True, "free_bytes": free}

    def describe(self) -> dict[str, object]:
        return {"backend": "local", "directory": str(self.root)}


def build_image_storage(settings: Settings, breaker: CircuitBreaker | None) -> ImageStorage:
    """The storage UPLOAD_STORAGE names; `breaker` guards a remote store (required for s3)."""
    if settings.UPLOAD_STORAGE == "s3":
        if breaker is None:
            raise ValueError("UPLOAD_STORAGE=s3 needs the storage circuit breaker")
        # Imported only when chosen: aiobotocore costs ~600 ms and ~43 MB to import.
        from app.services.s3_storage import S3ImageStorage

        return S3ImageStorage(settings, breaker)
    return DiskImageStorage(settings.UPLOAD_DIR, settings.UPLOAD_URL_PREFIX)
