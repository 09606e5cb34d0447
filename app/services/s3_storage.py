"""Uploaded images in an S3-compatible bucket (AWS S3, MinIO, R2, ...), through aiobotocore.

Why aiobotocore rather than obstore (figures from bench/s3_clients.py, docs/object-storage.md):
it streams the PUT body from the staged file, so a 10 MB image adds < 1 MB to the process while
it uploads; obstore reads the file into memory first (+24 MB as one PUT, +15 MB in 5 MB multipart
parts). obstore spends about half the CPU per PUT and imports in 10 ms instead of 600 ms (+9 MB
instead of +43 MB), which is why this module is imported only when UPLOAD_STORAGE=s3.

The key is the content hash chosen by the upload service (`<sha256>.<ext>`), so the same image
is stored once: `publish` asks (HEAD) first, and the PUT itself is conditional
(`If-None-Match: *`) so two replicas racing on the same new image cannot both write it. An object
carries its content type and the immutable Cache-Control; S3 cannot store other response headers
(`X-Content-Type-Options`), see docs/object-storage.md for how nosniff reaches clients.

Any failure to reach the store (refused, timed out, 5xx, bad credentials) becomes a 503
`storage_unavailable`: the staged file is discarded by the caller and nothing partial is left
in the bucket (a single PUT is atomic).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from app.core.config import Settings
from app.core.error_handlers import ServiceUnavailableError
from app.core.logging_config import get_logger
from app.services.storage import (
    CONTENT_TYPES,
    IMMUTABLE,
    READ_CHUNK_BYTES,
    DiskStaging,
    is_valid_name,
)

log = get_logger(__name__)

STORAGE_RETRY_AFTER_SECONDS = 5
MISSING = frozenset({"404", "NoSuchKey", "NotFound"})
ALREADY_STORED = frozenset({"412", "PreconditionFailed", "ConditionalRequestConflict"})


class StorageUnavailableError(ServiceUnavailableError):
    code, message = "storage_unavailable", "Image storage is unavailable; retry shortly"


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3ImageStorage:
    def __init__(self, settings: Settings) -> None:
        assert settings.S3_BUCKET  # settings validation refuses s3 without a bucket
        assert settings.S3_SECRET_ACCESS_KEY
        self.bucket = settings.S3_BUCKET
        self.public_base_url = (settings.S3_PUBLIC_BASE_URL or "").rstrip("/")
        self.presign_seconds = settings.S3_PRESIGN_SECONDS
        self.staging = DiskStaging(Path(settings.UPLOAD_DIR))
        self._client_options: dict[str, Any] = {
            "endpoint_url": settings.S3_ENDPOINT_URL,
            "region_name": settings.S3_REGION,
            "aws_access_key_id": settings.S3_ACCESS_KEY_ID,
            "aws_secret_access_key": settings.S3_SECRET_ACCESS_KEY.get_secret_value(),
            "config": AioConfig(
                connect_timeout=settings.S3_TIMEOUT_SECONDS,
                read_timeout=settings.S3_TIMEOUT_SECONDS,
                # One retry: an upload request should answer (503) quickly when S3 is down.
                retries={"max_attempts": 2, "mode": "standard"},
                s3={"addressing_style": settings.S3_ADDRESSING_STYLE},
                signature_version="s3v4",
            ),
        }
        self._context: Any = None
        self._client: Any = None

    async def start(self) -> None:
        # The client (its connection pool) lives as long as the app: opened in the lifespan.
        self._context = get_session().create_client("s3", **self._client_options)
        self._client = await self._context.__aenter__()

    async def close(self) -> None:
        if self._context is not None:
            await self._context.__aexit__(None, None, None)
            self._context = self._client = None

    def staging_file(self) -> tuple[Path, IO[bytes]]:
        return self.staging.new_file()

    async def publish(self, staged: Path, name: str) -> None:
        if not is_valid_name(name):
            raise ValueError("not a stored image name")
        if await self.size(name) is not None:
            log.info("upload_deduplicated", key=name)
            return
        extension = name.rsplit(".", 1)[1]
        try:
            # A file object: botocore streams it in chunks (and seeks it back to retry).
            with staged.open("rb") as body:
                await self._client.put_object(
                    Bucket=self.bucket,
                    Key=name,
                    Body=body,
                    ContentType=CONTENT_TYPES[extension],
                    CacheControl=IMMUTABLE,
                    IfNoneMatch="*",
                )
        except ClientError as exc:
            if _error_code(exc) in ALREADY_STORED:
                log.info("upload_deduplicated", key=name, race=True)
                return
            raise self._unavailable("put", exc) from exc
        except BotoCoreError as exc:
            raise self._unavailable("put", exc) from exc

    async def size(self, name: str) -> int | None:
        if not is_valid_name(name):
            return None
        try:
            head = await self._client.head_object(Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if _error_code(exc) in MISSING:
                return None
            raise self._unavailable("head", exc) from exc
        except BotoCoreError as exc:
            raise self._unavailable("head", exc) from exc
        return int(head["ContentLength"])

    async def read(self, name: str) -> AsyncIterator[bytes]:
        if not is_valid_name(name):
            raise ValueError("not a stored image name")
        try:
            response = await self._client.get_object(Bucket=self.bucket, Key=name)
        except (ClientError, BotoCoreError) as exc:
            raise self._unavailable("get", exc) from exc
        body = response["Body"]
        try:
            async for chunk in body.iter_chunks(READ_CHUNK_BYTES):
                yield chunk
        finally:
            body.close()

    async def url(self, name: str) -> str:
        if self.public_base_url:
            return f"{self.public_base_url}/{name}"
        value: str = await self._client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": name},
            ExpiresIn=self.presign_seconds,
        )
        return value

    @staticmethod
    def _unavailable(operation: str, exc: Exception) -> StorageUnavailableError:
        # The exception's text names the endpoint and error code, never the credentials.
        log.warning("storage_request_failed", operation=operation, error=str(exc))
        return StorageUnavailableError(retry_after=STORAGE_RETRY_AFTER_SECONDS)
