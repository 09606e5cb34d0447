"""Image uploads with UPLOAD_STORAGE=s3, through HTTP, against moto's S3 server (an emulator
started by the harness, devstack/s3.py): the returned URL is fetched as a browser would, the
bucket is listed and the server's request log counted."""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from PIL import ExifTags, Image
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.config import Settings
from app.resilience.circuit_breaker import CircuitBreaker
from app.services.s3_storage import S3ImageStorage
from devstack.s3 import ACCESS_KEY_ID, SECRET_ACCESS_KEY, MotoS3Server
from tests.api.helpers import auth, register
from tests.support.apps import serve
from tests.support.images import jpeg_with_gps

IMMUTABLE = "public, max-age=31536000, immutable"
Attach = Callable[..., Awaitable[S3ImageStorage]]


def image_bytes(fmt: str = "PNG", colour: tuple[int, int, int] = (10, 200, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), colour).save(buffer, format=fmt)
    return buffer.getvalue()


def s3_settings(
    settings_factory: Callable[..., Settings], server: MotoS3Server, bucket: str, scratch: Path,
    **overrides: object,
) -> Settings:  # fmt: skip
    values: dict[str, object] = {
        "UPLOAD_STORAGE": "s3",
        "UPLOAD_DIR": str(scratch),
        "S3_ENDPOINT_URL": server.url,
        "S3_BUCKET": bucket,
        "S3_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "S3_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "S3_TIMEOUT_SECONDS": 1,
        **overrides,
    }
    return settings_factory(**values)


@pytest.fixture
def bucket(s3_server: MotoS3Server) -> str:
    name = f"uploads-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(name)
    return name


@pytest.fixture
async def attach_s3(
    app: FastAPI,
    s3_server: MotoS3Server,
    bucket: str,
    tmp_path: Path,
    settings_factory: Callable[..., Settings],
) -> AsyncIterator[Attach]:
    """Point the app's image storage at a bucket (the session app, like `upload_dir` does)."""
    resources = app.state.resources
    original = resources.image_storage
    opened: list[S3ImageStorage] = []

    async def attach(server: MotoS3Server = s3_server, **overrides: object) -> S3ImageStorage:
        storage = S3ImageStorage(
            s3_settings(settings_factory, server, bucket, tmp_path, **overrides),
            CircuitBreaker("storage"),
        )
        await storage.start()
        opened.append(storage)
        resources.image_storage = storage
        return storage

    yield attach
    resources.image_storage = original
    for storage in opened:
        await storage.close()


@pytest.fixture
async def token(client: AsyncClient) -> str:
    user = await register(client)
    value: str = user["token"]
    return value


def staged_files(scratch: Path) -> list[Path]:
    return list((scratch / ".incoming").glob("*")) if (scratch / ".incoming").exists() else []


async def fetch(url: str) -> httpx.Response:
    """GET a returned URL from outside the app, as a browser would."""
    async with httpx.AsyncClient() as browser:
        return await browser.get(url)


async def upload(client: AsyncClient, token: str, data: bytes) -> httpx.Response:
    return await client.post(
        "/api/uploads", files={"file": ("x.png", data, "image/png")}, headers=auth(token)
    )


async def test_presigned_url_serves_the_image_with_its_headers(
    client: AsyncClient, token: str, attach_s3: Attach, s3_server: MotoS3Server, bucket: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    await attach_s3(S3_PRESIGN_SECONDS=120)
    data = image_bytes("JPEG")
    response = await upload(client, token, data)
    assert response.status_code == 201, response.text
    url = response.json()["url"]
    key = f"{hashlib.sha256(data).hexdigest()}.jpg"
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{s3_server.url}/{bucket}/{key}"
    assert "X-Amz-Signature=" in parts.query
    assert "X-Amz-Expires=120" in parts.query
    assert s3_server.keys(bucket) == [key]
    assert staged_files(tmp_path) == []

    fetched = await fetch(url)
    assert fetched.status_code == 200
    assert fetched.content == data
    assert fetched.headers["content-type"] == "image/jpeg"
    assert fetched.headers["cache-control"] == IMMUTABLE
    # Stored with the object; a CSP cannot be (docs/object-storage.md, "Response headers").
    assert fetched.headers["content-disposition"] == f'inline; filename="{key}"'
    # The bucket is private: without the signature the same object is refused.
    assert (await fetch(f"{s3_server.url}/{bucket}/{key}")).status_code == 403


async def test_public_base_url_is_returned_and_serves_the_image(
    client: AsyncClient, token: str, attach_s3: Attach, s3_server: MotoS3Server, bucket: str
) -> None:
    s3_server.allow_public_reads(bucket)
    base = f"{s3_server.url}/{bucket}"
    await attach_s3(S3_PUBLIC_BASE_URL=base + "/")
    data = image_bytes("GIF")
    response = await upload(client, token, data)
    assert response.status_code == 201, response.text
    key = f"{hashlib.sha256(data).hexdigest()}.gif"
    assert response.json() == {"url": f"{base}/{key}"}
    fetched = await fetch(response.json()["url"])
    assert fetched.status_code == 200
    assert fetched.content == data
    assert fetched.headers["content-type"] == "image/gif"
    assert fetched.headers["cache-control"] == IMMUTABLE

    # The URL can be the user's image, and the app's own /uploads path still serves it.
    updated = await client.put(
        "/api/user", json={"user": {"image": response.json()["url"]}}, headers=auth(token)
    )
    assert updated.json()["user"]["image"] == response.json()["url"]
    served = await client.get(f"/uploads/{key}")
    assert served.status_code == 200
    assert served.content == data
    assert served.headers["x-content-type-options"] == "nosniff"
    assert served.headers["content-security-policy"] == "default-src 'none'; sandbox"
    assert served.headers["content-disposition"] == f'inline; filename="{key}"'
    assert served.headers["cache-control"] == IMMUTABLE
    again = await client.get(f"/uploads/{key}", headers={"If-None-Match": served.headers["etag"]})
    assert again.status_code == 304


async def test_a_phone_photo_reaches_the_bucket_without_its_gps(
    client: AsyncClient, token: str, attach_s3: Attach, s3_server: MotoS3Server, bucket: str
) -> None:
    await attach_s3()
    photo = jpeg_with_gps(orientation=6)
    response = await upload(client, token, photo)
    assert response.status_code == 201, response.text
    [key] = s3_server.keys(bucket)
    stored = (await fetch(response.json()["url"])).content
    assert key == f"{hashlib.sha256(stored).hexdigest()}.jpg"
    assert b"GPS" not in stored
    assert b"PhoneMaker" not in stored
    with Image.open(io.BytesIO(stored)) as image:
        assert dict(image.getexif()) == {ExifTags.Base.Orientation: 6}


async def test_the_same_image_is_stored_once(
    client: AsyncClient, token: str, attach_s3: Attach, s3_server: MotoS3Server, bucket: str
) -> None:
    await attach_s3(S3_PUBLIC_BASE_URL=f"{s3_server.url}/{bucket}")
    data = image_bytes("PNG", (1, 2, 3))
    first = await upload(client, token, data)
    second = await upload(client, token, data)
    other = await upload(client, token, image_bytes("PNG", (4, 5, 6)))
    assert first.status_code == second.status_code == other.status_code == 201
    assert first.json() == second.json()
    key = f"{hashlib.sha256(data).hexdigest()}.png"
    assert sorted(s3_server.keys(bucket)) == sorted([key, other.json()["url"].rsplit("/", 1)[1]])
    # Counted on the server: one PUT per distinct image, the repeat was answered by a HEAD.
    assert len(s3_server.requests("PUT", f"/{bucket}/{key}")) == 1
    assert len(s3_server.requests("HEAD", f"/{bucket}/{key}")) == 2
    assert len(s3_server.requests("PUT", f"/{bucket}/")) == 2


async def test_a_concurrent_writer_of_the_same_key_is_not_overwritten(
    attach_s3: Attach, s3_server: MotoS3Server, bucket: str, tmp_path: Path
) -> None:
    """The PUT is conditional: when the object appears between the HEAD and the PUT (another
    replica won the race), the store refuses the write and publishing still succeeds."""
    storage = await attach_s3()
    data = image_bytes("PNG", (7, 7, 7))
    key = f"{hashlib.sha256(data).hexdigest()}.png"
    staged, handle = storage.staging_file()
    with handle:
        handle.write(data)
    # The race, made deterministic: the other writer's object lands after this one's HEAD.
    original_size = storage.size

    async def size_then_race(name: str) -> int | None:
        answer = await original_size(name)
        s3_server.admin().put_object(Bucket=bucket, Key=key, Body=data)
        return answer

    storage.size = size_then_race  # type: ignore[method-assign]
    await storage.publish(staged, key)
    puts = s3_server.requests("PUT", f"/{bucket}/{key}")
    assert len(puts) == 2
    assert '" 412 ' in puts[-1]
    assert s3_server.keys(bucket) == [key]


async def test_refused_uploads_leave_the_bucket_untouched(
    client: AsyncClient, token: str, attach_s3: Attach, s3_server: MotoS3Server, bucket: str,
    tmp_path: Path, app: FastAPI,
) -> None:  # fmt: skip
    await attach_s3()
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    assert (await upload(client, token, svg)).status_code == 415
    limit = app.state.resources.settings.UPLOAD_MAX_BYTES
    too_big = await upload(client, token, b"\x89PNG\r\n\x1a\n" + b"\0" * limit)
    assert too_big.status_code == 413
    anonymous = await client.post("/api/uploads", files={"file": ("a.png", image_bytes())})
    assert anonymous.status_code == 401
    assert s3_server.keys(bucket) == []
    assert s3_server.requests("PUT", f"/{bucket}/") == []
    assert staged_files(tmp_path) == []
    for path in ("/uploads/" + "a" * 64 + ".png", "/uploads/..%2F.env", "/uploads/x.svg"):
        assert (await client.get(path)).status_code in (400, 404)


async def test_storage_down_gives_503_and_nothing_partial(
    client: AsyncClient, token: str, attach_s3: Attach, bucket: str, tmp_path: Path
) -> None:
    outage = MotoS3Server().start()
    try:
        outage.create_bucket(bucket)
        await attach_s3(outage)
        stored = image_bytes("PNG", (90, 0, 0))
        assert (await upload(client, token, stored)).status_code == 201
        stored_key = f"{hashlib.sha256(stored).hexdigest()}.png"
        outage.stop()

        data = image_bytes("WEBP")
        down = await upload(client, token, data)
        assert down.status_code == 503, down.text
        assert down.json()["code"] == "storage_unavailable"
        assert down.json()["errors"]["body"] == ["Image storage is unavailable; retry shortly"]
        assert down.headers["retry-after"] == "5"
        assert staged_files(tmp_path) == []
        served = await client.get(f"/uploads/{stored_key}")
        assert served.status_code == 503
        assert served.json()["code"] == "storage_unavailable"

        # Back (an empty emulator on the same port): the client's retry stores the whole image.
        outage.start()
        outage.create_bucket(bucket)
        retried = await upload(client, token, data)
        assert retried.status_code == 201, retried.text
        key = f"{hashlib.sha256(data).hexdigest()}.webp"
        assert outage.keys(bucket) == [key]
        assert outage.admin().get_object(Bucket=bucket, Key=key)["Body"].read() == data
    finally:
        outage.stop()


# --- the storage breaker and detailed health, on an app built with UPLOAD_STORAGE=s3 ----------

RESET_SECONDS = 3.0
S3_TIMEOUT = 3


def breaker_gauge(exposition: str, name: str) -> float:
    return next(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "circuit_breaker_state" and sample.labels.get("name") == name
    )


async def storage_health(http: AsyncClient) -> dict[str, Any]:
    detailed = await http.get("/health/detailed")
    assert detailed.status_code == 200
    readiness = await http.get("/health/readiness")
    assert readiness.status_code == 200, "the store is never part of readiness"
    assert "storage" not in readiness.json()["checks"]
    for response in (detailed, readiness):
        assert SECRET_ACCESS_KEY not in response.text
        assert ACCESS_KEY_ID not in response.text
    body: dict[str, Any] = detailed.json()
    return body


async def test_storage_breaker_opens_in_an_outage_and_closes_when_the_store_is_back(
    app: FastAPI, db_connection: AsyncConnection, settings_factory: Callable[..., Settings],
    tmp_path: Path,
) -> None:  # fmt: skip
    bucket = f"uploads-{uuid.uuid4().hex[:12]}"
    outage = MotoS3Server().start()
    try:
        outage.create_bucket(bucket)
        settings = s3_settings(
            settings_factory, outage, bucket, tmp_path, S3_TIMEOUT_SECONDS=S3_TIMEOUT,
            BREAKER_FAILURE_THRESHOLD=2, BREAKER_RESET_SECONDS=RESET_SECONDS,
        )  # fmt: skip
        async with serve(settings) as http:
            # This app's writes go into the test's transaction, rolled back with it.
            http.app.state.resources.session_factory = app.state.resources.session_factory  # type: ignore[attr-defined]
            token = (await register(http))["token"]
            stored = image_bytes("PNG", (0, 90, 0))
            assert (await upload(http, token, stored)).status_code == 201
            body = await storage_health(http)
            assert body["status"] == "ok"
            assert body["circuit_breakers"]["storage"] == "closed"
            storage = body["checks"]["storage"]
            assert storage["status"] == "ok"
            assert storage["latency_ms"] >= 0
            assert storage["backend"] == "s3"
            assert storage["bucket"] == bucket
            assert storage["endpoint"] == f"127.0.0.1:{outage.port}"
            assert storage["breaker"] == "closed"
            assert storage["last_error"] is None

            outage.stop()
            # Below the threshold each upload still tries the store (and waits for it).
            for colour in (1, 2):
                down = await upload(http, token, image_bytes("PNG", (colour, 0, 0)))
                assert down.status_code == 503, down.text
            # Open: refused before the body is read, without a request to the store.
            started = time.monotonic()
            refused = await upload(http, token, image_bytes("WEBP"))
            elapsed = time.monotonic() - started
            assert refused.status_code == 503
            assert elapsed < S3_TIMEOUT / 10, f"{elapsed:.3f} s: the breaker did not answer"
            assert refused.json()["code"] == "storage_unavailable"
            assert refused.json()["request_id"]
            assert refused.headers["retry-after"] == "5"
            served = await http.get(f"/uploads/{hashlib.sha256(stored).hexdigest()}.png")
            assert served.status_code == 503
            assert served.json()["code"] == "storage_unavailable"
            assert staged_files(tmp_path) == []

            body = await storage_health(http)
            assert body["status"] == "degraded"
            assert body["circuit_breakers"]["storage"] == "open"
            storage = body["checks"]["storage"]
            assert storage["status"] == "down"
            assert storage["breaker"] == "open"
            assert "Could not connect" in storage["error"]
            assert storage["last_error"].startswith("head: EndpointConnectionError")
            assert breaker_gauge((await http.get("/health/metrics")).text, "storage") == 2

            # Back (an empty emulator on the same port): health sees it at once, uploads once
            # the cool-down is over and the trial request succeeds.
            outage.start()
            outage.create_bucket(bucket)
            assert (await storage_health(http))["checks"]["storage"]["status"] == "ok"
            deadline = time.monotonic() + RESET_SECONDS + 5
            while (await storage_health(http))["circuit_breakers"]["storage"] == "open":
                assert time.monotonic() < deadline, "the breaker never half-opened"
                await asyncio.sleep(0.2)
            retried = await upload(http, token, image_bytes("WEBP"))
            assert retried.status_code == 201, retried.text
            body = await storage_health(http)
            assert body["status"] == "ok"
            assert body["circuit_breakers"]["storage"] == "closed"
            assert body["checks"]["storage"]["last_error"] is None
            assert breaker_gauge((await http.get("/health/metrics")).text, "storage") == 0
            key = f"{hashlib.sha256(image_bytes('WEBP')).hexdigest()}.webp"
            assert outage.keys(bucket) == [key]
    finally:
        outage.stop()


async def test_a_hanging_store_costs_one_upload_its_timeouts_then_none(
    app: FastAPI, db_connection: AsyncConnection, settings_factory: Callable[..., Settings],
    tmp_path: Path,
) -> None:  # fmt: skip
    """The case the breaker is for: a store that accepts connections and never answers (the
    server frozen with SIGSTOP) costs each request its read timeouts, until the breaker opens."""
    bucket = f"uploads-{uuid.uuid4().hex[:12]}"
    with MotoS3Server() as hung:
        hung.create_bucket(bucket)
        settings = s3_settings(
            settings_factory, hung, bucket, tmp_path, S3_TIMEOUT_SECONDS=1,
            BREAKER_FAILURE_THRESHOLD=1, BREAKER_RESET_SECONDS=2,
        )  # fmt: skip
        async with serve(settings) as http:
            http.app.state.resources.session_factory = app.state.resources.session_factory  # type: ignore[attr-defined]
            token = (await register(http))["token"]
            hung.pause()
            try:
                started = time.monotonic()
                slow = await upload(http, token, image_bytes("PNG", (3, 3, 3)))
                slow_elapsed = time.monotonic() - started
                assert slow.status_code == 503
                assert slow_elapsed >= 1, f"{slow_elapsed:.2f} s: it did not wait for the store"
                started = time.monotonic()
                fast = await upload(http, token, image_bytes("PNG", (4, 4, 4)))
                assert fast.status_code == 503
                assert fast.json()["code"] == "storage_unavailable"
                assert time.monotonic() - started < 0.1
                body = await storage_health(http)  # the check is bounded: ~1 s, not hanging
                assert body["checks"]["storage"]["status"] == "down"
                assert body["checks"]["storage"]["breaker"] == "open"
                assert "timeout" in body["checks"]["storage"]["last_error"].lower()
            finally:
                hung.resume()
            deadline = time.monotonic() + 10
            while (await storage_health(http))["circuit_breakers"]["storage"] == "open":
                assert time.monotonic() < deadline, "the breaker never half-opened"
                await asyncio.sleep(0.2)
            assert (await upload(http, token, image_bytes("PNG", (5, 5, 5)))).status_code == 201
            assert (await storage_health(http))["circuit_breakers"]["storage"] == "closed"
