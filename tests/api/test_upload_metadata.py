"""Uploads through HTTP lose their metadata (a phone photo must not publish where it was taken)
and are bounded in decoded size: each image is uploaded, fetched back from its URL and parsed
with Pillow."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from PIL import ExifTags, Image, PngImagePlugin
from pydantic import ValidationError

from app.core.config import Settings
from tests.api.helpers import auth, error_messages, register
from tests.support.images import (
    XMP,
    animated,
    bomb_png,
    frames_of,
    gps_exif,
    gradient,
    image_bytes,
    jpeg_with_gps,
)


@pytest.fixture
async def token(client: AsyncClient, upload_dir: Path) -> str:
    user = await register(client)
    value: str = user["token"]
    return value


@pytest.fixture
def pixel_limit(app: FastAPI) -> Iterator[Callable[[int], None]]:
    """Give the app's settings another UPLOAD_MAX_PIXELS for this test."""
    resources = app.state.resources
    original = resources.settings

    def set_limit(pixels: int) -> None:
        resources.settings = original.model_copy(update={"UPLOAD_MAX_PIXELS": pixels})

    yield set_limit
    resources.settings = original


async def round_trip(client: AsyncClient, token: str, data: bytes) -> bytes:
    """Upload `data`; the bytes its URL serves (named by their own hash)."""
    response = await client.post(
        "/api/uploads", files={"file": ("photo", data)}, headers=auth(token)
    )
    assert response.status_code == 201, response.text
    served = await client.get(response.json()["url"])
    assert served.status_code == 200
    name = response.json()["url"].rsplit("/", 1)[1]
    assert name.split(".")[0] == hashlib.sha256(served.content).hexdigest()
    assert served.headers["content-disposition"] == f'inline; filename="{name}"'
    assert served.headers["content-security-policy"] == "default-src 'none'; sandbox"
    assert served.headers["x-content-type-options"] == "nosniff"
    return served.content


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def decoded(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGBA").tobytes()


def scan(data: bytes) -> bytes:
    return data[data.index(b"\xff\xda") :]


async def test_a_phone_photo_is_stored_without_where_it_was_taken(
    client: AsyncClient, token: str, upload_dir: Path
) -> None:
    photo = jpeg_with_gps(orientation=6)
    with Image.open(io.BytesIO(photo)) as original:
        assert original.getexif().get_ifd(ExifTags.IFD.GPSInfo)  # the test photo has a position
    stored = await round_trip(client, token, photo)
    with Image.open(io.BytesIO(stored)) as image:
        exif = image.getexif()
        assert exif.get_ifd(ExifTags.IFD.GPSInfo) == {}
        assert dict(exif) == {ExifTags.Base.Orientation: 6}  # still displayed upright
        assert "xmp" not in image.info
        assert "comment" not in image.info
    for secret in (b"PhoneMaker", b"2026:11:30", b"xmpmeta", b"taken at home"):
        assert secret not in stored
    assert scan(stored) == scan(photo)  # the compressed pixels, byte for byte
    assert decoded(stored) == decoded(photo)
    assert [p.read_bytes() for p in stored_files(upload_dir)] == [stored]


async def test_the_same_picture_with_other_metadata_is_stored_once(
    client: AsyncClient, token: str, upload_dir: Path
) -> None:
    urls = set()
    for orientation in (None, 1):  # neither keeps an EXIF segment
        buffer = io.BytesIO()
        exif = gps_exif(orientation)
        exif[ExifTags.Base.Model] = f"Model {orientation}"
        gradient().save(buffer, format="JPEG", exif=exif, quality=90)
        response = await client.post(
            "/api/uploads", files={"file": ("p.jpg", buffer.getvalue())}, headers=auth(token)
        )
        assert response.status_code == 201, response.text
        urls.add(response.json()["url"])
    assert len(urls) == 1
    assert len(stored_files(upload_dir)) == 1


def png_with_metadata() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Jane Doe")
    info.add_text("Comment", "compressed secret", zip=True)
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    buffer = io.BytesIO()
    gradient().save(buffer, format="PNG", pnginfo=info, exif=gps_exif(6))
    return buffer.getvalue()


def webp_with_metadata() -> bytes:
    buffer = io.BytesIO()
    gradient().save(buffer, format="WEBP", exif=gps_exif(6), xmp=XMP, lossless=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("make", "secrets"),
    [
        (png_with_metadata, (b"Jane", b"xmpmeta", b"PhoneMaker", b"zTXt", b"eXIf")),
        (webp_with_metadata, (b"EXIF", b"XMP ", b"xmpmeta", b"PhoneMaker")),
        (lambda: image_bytes("GIF", comment=b"made at home"), (b"made at home",)),
    ],
    ids=["png", "webp", "gif"],
)
async def test_metadata_is_stripped_and_pixels_kept(
    client: AsyncClient, token: str, make: Callable[[], bytes], secrets: tuple[bytes, ...]
) -> None:
    data = make()
    assert all(secret in data for secret in secrets)
    stored = await round_trip(client, token, data)
    assert not [secret for secret in secrets if secret in stored]
    assert decoded(stored) == decoded(data)
    with Image.open(io.BytesIO(stored)) as image:
        assert not image.getexif()


@pytest.mark.parametrize(
    ("fmt", "options"),
    [("GIF", {"comment": b"frames"}), ("PNG", {}), ("WEBP", {"lossless": True})],
)
async def test_animations_keep_every_frame(
    client: AsyncClient, token: str, fmt: str, options: dict[str, object]
) -> None:
    data = animated(fmt, frames=4, **options)
    stored = await round_trip(client, token, data)
    assert frames_of(stored) == 4
    assert b"frames" not in stored


async def test_a_decompression_bomb_gets_422_and_nothing_is_stored(
    client: AsyncClient, token: str, upload_dir: Path
) -> None:
    bomb = bomb_png()  # ~70 KB declaring 100000x100000 pixels (10 GB decoded)
    assert len(bomb) < 200_000
    response = await client.post(
        "/api/uploads", files={"file": ("bomb.png", bomb)}, headers=auth(token)
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert error_messages(response) == ["image must be at most 40000000 pixels (got 100000x100000)"]
    assert stored_files(upload_dir) == []


@pytest.mark.parametrize(("fmt", "extension"), [("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp")])
async def test_the_pixel_limit_is_exact(
    client: AsyncClient,
    token: str,
    pixel_limit: Callable[[int], None],
    upload_dir: Path,
    fmt: str,
    extension: str,
) -> None:
    data = image_bytes(fmt, (40, 25))
    pixel_limit(1000)
    at_limit = await client.post("/api/uploads", files={"file": ("a", data)}, headers=auth(token))
    assert at_limit.status_code == 201, at_limit.text
    assert at_limit.json()["url"].endswith(f".{extension}")
    pixel_limit(999)
    over = await client.post("/api/uploads", files={"file": ("a", data)}, headers=auth(token))
    assert over.status_code == 422
    assert error_messages(over) == ["image must be at most 999 pixels (got 40x25)"]


async def test_a_malformed_image_gets_422(
    client: AsyncClient, token: str, upload_dir: Path
) -> None:
    data = image_bytes("PNG")
    response = await client.post(
        "/api/uploads", files={"file": ("a.png", data[:-20])}, headers=auth(token)
    )
    assert response.status_code == 422
    assert error_messages(response) == ["file is not a valid PNG image (it ends early)"]
    assert stored_files(upload_dir) == []


def test_the_pixel_limit_must_be_positive(settings_factory: Callable[..., Settings]) -> None:
    assert settings_factory().UPLOAD_MAX_PIXELS == 40_000_000
    with pytest.raises(ValidationError, match="UPLOAD_MAX_PIXELS"):
        settings_factory(UPLOAD_MAX_PIXELS=0)
