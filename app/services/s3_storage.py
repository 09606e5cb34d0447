"""Uploaded images in an S3-compatible bucket (AWS S3, MinIO, R2, ...), through aiobotocore.

Why aiobotocore rather than obstore (figures from bench/s3_clients.py, docs/object-storage.md):
it streams the PUT body from the staged file, so a 10 MB image adds < 1 MB to the process while
it uploads; obstore reads the file into memory first (+24 MB as one PUT, +15 MB in 5 MB multipart
parts). obstore spends about half the CPU per PUT and imports in 10 ms instead of 600 ms (+9 MB
instead of +43 MB), which is why this module is imported only when UPLOAD_STORAGE=s3.

The key is the content hash chosen by the upload service (`<sha256>.<ext>`), so the same image
is stored once: `publish` asks (HEAD) first, and the PUT itself is conditional
(`If-None-Match: *`) so two replicas racing on the same new image cannot both write it. An object
carries its content type, the immutable Cache-Control and `Content-Disposition: inline` with its
key as the file name; S3 cannot store other response headers (`X-Content-Type-Options`,
`Content-Security-Policy`), see docs/object-storage.md for how they reach clients.

Any failure to reach the store (refused, timed out, 5xx, bad credentials) becomes a 503
`storage_unavailable`: the staged file is discarded by the caller and nothing partial is left
in the bucket (a single PUT is atomic). Every request that needs the store (HEAD, PUT, GET) goes
through the `storage` circuit breaker, so once the store is known dead an upload gets its 503 at
once, before its body is read, instead of waiting out the timeouts and the retry. The health
check (HeadBucket) uses a second client without retries and with 1 s timeouts, outside the
breaker: it reports the store as it is now, while the breaker decides what requests do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import urlsplit

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from app.core.config import Settings
from app.core.logging_config import get_logger
from app.resilience.circuit_breaker import BreakerState, CircuitBreaker, CircuitOpenError
from app.services.storage import (
    CONTENT_TYPES,
    IMMUTABLE,
    READ_CHUNK_BYTES,
    STORAGE_RETRY_AFTER_SECONDS,
    DiskStaging,
    StorageCheckError,
    StorageUnavailableError,
    is_valid_name,
)

log = get_logger(__name__)
T = TypeVar("T")

MISSING = frozenset({"404", "NoSuchKey", "NotFound"})
ALREADY_STORED = frozenset({"412", "PreconditionFailed", "ConditionalRequestConflict"})
CHECK_TIMEOUT_SECONDS = 1.0


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _endpoint_host(url: str) -> str:
    """host[:port] of an endpoint URL: never the scheme's user info, should one be there."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


class S3ImageStorage:
    def __init__(self, settings: Settings, breaker: CircuitBreaker) -> None:
        assert settings.S3_BUCKET  # nosec B101 # settings refuse s3 without it
        assert settings.S3_SECRET_ACCESS_KEY  # nosec B101 # settings refuse s3 without it
        self.bucket = settings.S3_BUCKET
        self.breaker = breaker
        self.public_base_url = (settings.S3_PUBLIC_BASE_URL or "").rstrip("/")
        self.presign_seconds = settings.S3_PRESIGN_SECONDS
        self.staging = DiskStaging(Path(settings.UPLOAD_DIR))
        self.endpoint = _endpoint_host(
            settings.S3_ENDPOINT_URL or f"https://s3.{settings.S3_REGION}.amazonaws.com"
        )
        # The last failed request in words (what the breaker counted), for detailed health.
        self.last_error: str | None = None
        self._secrets = [
            settings.S3_SECRET_ACCESS_KEY.get_secret_value(),
            settings.S3_ACCESS_KEY_ID or "",
        ]
        self._client_options: dict[str, Any] = {
            "endpoint_url": settings.S3_ENDPOINT_URL,
            "region_name": settings.S3_REGION,
            "aws_access_key_id": settings.S3_ACCESS_KEY_ID,
            "aws_secret_access_key": settings.S3_SECRET_ACCESS_KEY.get_secret_value(),
        }
        self._config = AioConfig(
            connect_timeout=settings.S3_TIMEOUT_SECONDS,
            read_timeout=settings.S3_TIMEOUT_SECONDS,
            # One retry: an upload request should answer (503) quickly when S3 is down.
            retries={"max_attempts": 2, "mode": "standard"},
            s3={"addressing_style": settings.S3_ADDRESSING_STYLE},
            signature_version="s3v4",
        )
        self._contexts: list[Any] = []
        self._client: Any = None
        self._check_client: Any = None

    async def start(self) -> None:
        # The clients (their connection pools) live as long as the app: opened in the lifespan.
        # One session for both: the second client then costs ~0.3 MB instead of ~13 MB.
        session = get_session()
        check_config = self._config.merge(
            AioConfig(
                connect_timeout=CHECK_TIMEOUT_SECONDS,
                read_timeout=CHECK_TIMEOUT_SECONDS,
                retries={"max_attempts": 1, "mode": "standard"},
            )
        )
        for config in (self._config, check_config):
            context = session.create_client("s3", **self._client_options, config=config)
            self._contexts.append(context)
            client = await context.__aenter__()
            if self._client is None:
                self._client = client
            else:
                self._check_client = client

    async def close(self) -> None:
        for context in reversed(self._contexts):
            await context.__aexit__(None, None, None)
        self._contexts.clear()
        self._client = self._check_client = None

    def staging_file(self) -> tuple[Path, IO[bytes]]:
        return self.staging.new_file()

    def raise_if_unavailable(self) -> None:
        # Open (not yet cooled down): the upload would be refused after its body was read.
        if self.breaker.state is BreakerState.OPEN:
            raise StorageUnavailableError(retry_after=STORAGE_RETRY_AFTER_SECONDS)

    async def publish(self, staged: Path, name: str) -> None:
        if not is_valid_name(name):
            raise ValueError("not a stored image name")
        if await self.size(name) is not None:
            log.info("upload_deduplicated", key=name)
            return
        extension = name.rsplit(".", 1)[1]

        async def put() -> bool:
            try:
                # A file object: botocore streams it in chunks (and seeks it back to retry).
                with staged.open("rb") as body:
                    await self._client.put_object(
                        Bucket=self.bucket,
                        Key=name,
                        Body=body,
                        ContentType=CONTENT_TYPES[extension],
                        CacheControl=IMMUTABLE,
                        ContentDisposition=f'inline; filename="{name}"',
                        IfNoneMatch="*",
                    )
            except ClientError as exc:
                if _error_code(exc) in ALREADY_STORED:
                    return False  # an answer from a working store, not a failure
                raise self._unavailable("put", exc) from exc
            except BotoCoreError as exc:
                raise self._unavailable("put", exc) from exc
            return True

        if not await self._guarded(put):
            log.info("upload_deduplicated", key=name, race=True)

    async def size(self, name: str) -> int | None:
        if not is_valid_name(name):
            return None

        async def head() -> int | None:
            try:
                response = await self._client.head_object(Bucket=self.bucket, Key=name)
            except ClientError as exc:
                if _error_code(exc) in MISSING:
                    return None
                raise self._unavailable("head", exc) from exc
            except BotoCoreError as exc:
                raise self._unavailable("head", exc) from exc
            return int(response["ContentLength"])

        return await self._guarded(head)

    async def read(self, name: str) -> AsyncIterator[bytes]:
        if not is_valid_name(name):
            raise ValueError("not a stored image name")

        async def get() -> Any:
            try:
                return await self._client.get_object(Bucket=self.bucket, Key=name)
            except (ClientError, BotoCoreError) as exc:
                raise self._unavailable("get", exc) from exc

        body = (await self._guarded(get))["Body"]
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

    async def check(self) -> dict[str, object]:
        try:
            await self._check_client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise StorageCheckError(self._words(exc)) from exc
        return {}

    def describe(self) -> dict[str, object]:
        return {
            "backend": "s3",
            "bucket": self.bucket,
            "endpoint": self.endpoint,
            "breaker": self.breaker.state.value,
            "last_error": self.last_error,
        }

    async def _guarded(self, request: Callable[[], Awaitable[T]]) -> T:
        try:
            result = await self.breaker.call(request)
        except CircuitOpenError as exc:
            raise StorageUnavailableError(retry_after=STORAGE_RETRY_AFTER_SECONDS) from exc
        if self.breaker.state is BreakerState.CLOSED:
            self.last_error = None  # the store answers again: the old failure is history
        return result

    def _words(self, exc: Exception) -> str:
        # botocore's text names the endpoint and the error code, not the keys; scrubbed anyway,
        # because this text reaches logs and detailed health.
        words = f"{type(exc).__name__}: {exc}"
        for secret in self._secrets:
            if secret:
                words = words.replace(secret, "***")
        return words

    def _unavailable(self, operation: str, exc: Exception) -> StorageUnavailableError:
        self.last_error = f"{operation}: {self._words(exc)}"
        log.warning("storage_request_failed", operation=operation, error=self._words(exc))
        return StorageUnavailableError(retry_after=STORAGE_RETRY_AFTER_SECONDS)
