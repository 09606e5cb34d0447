"""Image uploads through HTTP: real images made with Pillow, stored on a real (temporary) disk.
What the metadata stripping and the pixel limit do is in test_upload_metadata.py."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from tests.api.helpers import auth, error_messages, register
from tests.support.images import image_bytes, png_prefix


@pytest.fixture
async def token(client: AsyncClient, upload_dir: Path) -> str:
    user = await register(client)
    token: str = user["token"]
    return token


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    ("fmt", "extension", "content_type"),
    [
        ("PNG", "png", "image/png"),
        ("JPEG", "jpg", "image/jpeg"),
        ("GIF", "gif", "image/gif"),
        ("WEBP", "webp", "image/webp"),
    ],
)
async def test_image_round_trips_byte_for_byte(
    client: AsyncClient,
    token: str,
    upload_dir: Path,
    fmt: str,
    extension: str,
    content_type: str,
) -> None:
    # Pillow writes no metadata here: the stored copy is the upload, byte for byte.
    data = image_bytes(fmt)
    # The client's name and type are ignored: only the bytes decide.
    files = {"file": ("../../etc/passwd", data, "text/plain")}
    response = await client.post("/api/uploads", files=files, headers=auth(token))
    assert response.status_code == 201, response.text
    digest = hashlib.sha256(data).hexdigest()
    assert response.json() == {"url": f"/uploads/{digest}.{extension}"}
    assert stored_files(upload_dir) == [upload_dir / f"{digest}.{extension}"]

    served = await client.get(response.json()["url"])
    assert served.status_code == 200
    assert served.content == data
    assert served.headers["content-type"] == content_type
    assert served.headers["content-length"] == str(len(data))
    assert served.headers["x-content-type-options"] == "nosniff"
    assert served.headers["content-security-policy"] == "default-src 'none'; sandbox"
    assert served.headers["content-disposition"] == f'inline; filename="{digest}.{extension}"'
    assert "immutable" in served.headers["cache-control"]
    assert "max-age=31536000" in served.headers["cache-control"]

    again = await client.get(served.request.url, headers={"If-None-Match": served.headers["etag"]})
    assert again.status_code == 304
    assert again.headers["content-security-policy"] == "default-src 'none'; sandbox"


async def test_served_with_csp_nosniff_and_a_safe_disposition(
    client: AsyncClient, token: str
) -> None:
    # Whatever name the client sent, the served one is the content address.
    files = {"file": ("\"; filename*=UTF-8''evil.html", image_bytes("GIF"), "text/html")}
    uploaded = await client.post("/api/uploads", files=files, headers=auth(token))
    assert uploaded.status_code == 201, uploaded.text
    url = uploaded.json()["url"]
    name = url.rsplit("/", 1)[1]
    for headers in ({}, {"If-None-Match": f'"{name.split(".")[0]}"'}):
        served = await client.get(url, headers=headers)
        assert served.status_code in (200, 304)
        assert served.headers.get_list("content-security-policy") == ["default-src 'none'; sandbox"]
        assert served.headers.get_list("x-content-type-options") == ["nosniff"]
        assert served.headers.get_list("content-disposition") == [f'inline; filename="{name}"']
    assert served.status_code == 304


async def test_uploaded_url_becomes_the_users_image(client: AsyncClient, token: str) -> None:
    uploaded = await client.post(
        "/api/uploads", files={"file": ("me.png", image_bytes("PNG"))}, headers=auth(token)
    )
    url = uploaded.json()["url"]
    updated = await client.put("/api/user", json={"user": {"image": url}}, headers=auth(token))
    assert updated.status_code == 200, updated.text
    assert updated.json()["user"]["image"] == url
    current = await client.get("/api/user", headers=auth(token))
    assert current.json()["user"]["image"] == url
    assert (await client.get(url)).content == image_bytes("PNG")


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("notes.png", b"just some text, renamed to look like a picture\n"),
        ("logo.svg", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'),
        ("page.png", b"<!DOCTYPE html><html><body>hi</body></html>"),
        ("tiny.gif", b"GIF8"),
    ],
)
async def test_non_images_are_refused(
    client: AsyncClient, token: str, upload_dir: Path, name: str, payload: bytes
) -> None:
    files = {"file": (name, payload, "image/png")}
    response = await client.post("/api/uploads", files=files, headers=auth(token))
    assert response.status_code == 415, response.text
    assert response.json()["code"] == "unsupported_media_type"
    assert stored_files(upload_dir) == []


async def test_upload_requires_a_token(client: AsyncClient, upload_dir: Path) -> None:
    response = await client.post("/api/uploads", files={"file": ("a.png", image_bytes("PNG"))})
    assert response.status_code == 401
    assert stored_files(upload_dir) == []


async def test_upload_request_shape_errors(
    client: AsyncClient, token: str, upload_dir: Path
) -> None:
    as_json = await client.post("/api/uploads", json={"file": "x"}, headers=auth(token))
    assert as_json.status_code == 415
    other_field = await client.post(
        "/api/uploads", files={"avatar": ("a.png", image_bytes("PNG"))}, headers=auth(token)
    )
    assert other_field.status_code == 422
    assert error_messages(other_field) == ["file can't be blank"]
    truncated = await client.post(
        "/api/uploads",
        content=b'--xyz\r\nContent-Disposition: form-data; name="file"\r\n\r\n\x89PNG\r\n',
        headers={**auth(token), "Content-Type": "multipart/form-data; boundary=xyz"},
    )
    assert truncated.status_code == 400
    assert stored_files(upload_dir) == []


async def test_too_large_upload_gets_413(
    client: AsyncClient, token: str, upload_dir: Path, app: FastAPI
) -> None:
    limit = app.state.resources.settings.UPLOAD_MAX_BYTES
    # A well-formed start (the early header check lets it through), then more than the limit.
    payload = png_prefix(limit) + b"\0" * limit
    response = await client.post(
        "/api/uploads", files={"file": ("big.png", payload)}, headers=auth(token)
    )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert stored_files(upload_dir) == []

    async def chunked() -> AsyncIterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
        for start in range(0, len(payload), 1 << 20):
            yield payload[start : start + (1 << 20)]
        yield b"\r\n--b--\r\n"

    streamed = await client.post(
        "/api/uploads",
        content=chunked(),
        headers={**auth(token), "Content-Type": "multipart/form-data; boundary=b"},
    )
    assert streamed.status_code == 413
    assert stored_files(upload_dir) == []


@pytest.mark.parametrize(
    "path",
    [
        "/uploads/../app/main.py",
        "/uploads/..%2F..%2Fapp%2Fmain.py",
        "/uploads/%2e%2e/pyproject.toml",
        "/uploads/.incoming",
        "/uploads/" + "a" * 64 + ".svg",
        "/uploads/" + "A" * 64 + ".png",
        "/uploads/" + "a" * 64 + ".png",
    ],
)
async def test_only_stored_names_are_served(
    client: AsyncClient, upload_dir: Path, path: str
) -> None:
    (upload_dir / "secret.txt").write_text("do not serve")
    response = await client.get(path)
    assert response.status_code in (400, 404)
    assert b"do not serve" not in response.content
    assert b"import" not in response.content
