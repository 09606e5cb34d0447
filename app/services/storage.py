"""Where uploaded images live: a small interface and its local-disk implementation.

Names are content addresses (`<sha256>.<ext>`) chosen by the upload service; no name from a
client reaches the file system, and `is_valid_name` is checked again before any lookup. An object
store (S3, GCS) can replace the disk by implementing `ImageStorage`: `staging_file` gives a local
scratch file to stream into, `publish` moves it to its final name (upload it, for a store).
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Protocol

NAME_PATTERN = re.compile(r"^[0-9a-f]{64}\.(png|jpg|gif|webp)$")
READ_CHUNK_BYTES = 64 * 1024


def is_valid_name(name: str) -> bool:
    return NAME_PATTERN.fullmatch(name) is not None


class ImageStorage(Protocol):
    def staging_file(self) -> tuple[Path, IO[bytes]]:
        """A new, empty scratch file (blocking: call it from a worker thread)."""

    async def publish(self, staged: Path, name: str) -> None:
        """Store the staged file under `name` (idempotent: same name, same bytes)."""

    async def size(self, name: str) -> int | None:
        """Size in bytes of a stored image, None when there is none by that name."""

    def read(self, name: str) -> AsyncIterator[bytes]:
        """The stored bytes, in chunks."""


class DiskImageStorage:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.staging = self.root / ".incoming"

    def _path(self, name: str) -> Path:
        if not is_valid_name(name):
            raise ValueError("not a stored image name")
        return self.root / name

    def staging_file(self) -> tuple[Path, IO[bytes]]:
        # Staged next to the final files so publishing is an atomic rename on one file system.
        self.staging.mkdir(parents=True, exist_ok=True)
        descriptor, path = tempfile.mkstemp(dir=self.staging, suffix=".part")
        return Path(path), os.fdopen(descriptor, "wb")

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
