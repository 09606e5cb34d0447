"""JSON bodies are bounded (REQUEST_MAX_BYTES): 413 in the envelope, whether the size is declared
up front or only discovered while the body streams in. Uploads keep their own, larger limit."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

from httpx import AsyncClient
from PIL import Image

from tests.api.helpers import auth, register

LIMIT = 1024 * 1024


async def test_declared_oversize_body_is_413(client: AsyncClient) -> None:
    payload = b'{"user": {"email": "' + b"a" * (LIMIT + 10) + b'"}}'
    response = await client.post(
        "/api/users/login", content=payload, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    body = response.json()
    assert body["code"] == "payload_too_large"
    assert body["request_id"] == response.headers["x-request-id"]


async def test_streamed_oversize_body_is_413(client: AsyncClient) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"user": {"email": "'
        for _ in range(64):  # 4 MiB in 64 KiB chunks, with no Content-Length
            sent += 65536
            yield b"a" * 65536
        yield b'"}}'

    response = await client.post(
        "/api/users/login", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


async def test_body_under_the_limit_is_processed(client: AsyncClient) -> None:
    user = await register(client)
    article = {"title": "Long read", "description": "d", "body": "x" * 90_000}
    response = await client.post(
        "/api/articles", json={"article": article}, headers=auth(user["token"])
    )
    assert response.status_code == 201


async def test_uploads_are_not_bound_by_the_json_limit(
    client: AsyncClient, upload_dir: Path
) -> None:
    user = await register(client)
    buffer = io.BytesIO()
    Image.effect_noise((1400, 1400), 100).save(buffer, format="PNG")
    image = buffer.getvalue()
    assert len(image) > LIMIT
    response = await client.post(
        "/api/uploads", files={"file": ("big.png", image, "image/png")}, headers=auth(user["token"])
    )
    assert response.status_code == 201, response.text
