"""Images for upload tests: real ones made with Pillow (with and without metadata), and PNGs
built chunk by chunk where a test needs a header Pillow would not write (a bomb, a prefix)."""

from __future__ import annotations

import io
import os
import struct
import zlib
from typing import Any

from PIL import ExifTags, Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Paris, Pont Neuf: what a phone would write into a photo taken there.
LATITUDE = (48.0, 51.0, 24.0)
LONGITUDE = (2.0, 20.0, 28.0)
XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
    b'xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="48,51.4N"/>'
    b"</rdf:RDF></x:xmpmeta>"
)


def image_bytes(
    fmt: str,
    size: tuple[int, int] = (8, 6),
    colour: tuple[int, int, int] = (200, 30, 90),
    **save: Any,
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=fmt, **save)
    return buffer.getvalue()


def gradient(size: tuple[int, int] = (64, 48)) -> Image.Image:
    """An image with detail (a flat one compresses to almost nothing)."""
    return Image.linear_gradient("L").resize(size).convert("RGB")


def noise_image(fmt: str, size: tuple[int, int], **save: Any) -> bytes:
    """Random pixels: an image whose file is about as large as its pixels."""
    image = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def gps_exif(orientation: int | None = None) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "PhoneMaker"
    exif[ExifTags.Base.Model] = "Phone 15"
    exif[ExifTags.Base.DateTime] = "2026:11:30 18:42:07"
    if orientation is not None:
        exif[ExifTags.Base.Orientation] = orientation
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = LATITUDE
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = LONGITUDE
    return exif


def jpeg_with_gps(orientation: int | None = 6, size: tuple[int, int] = (64, 48)) -> bytes:
    """A phone-like photo: EXIF with GPS (and an orientation), XMP and a comment."""
    buffer = io.BytesIO()
    gradient(size).save(
        buffer,
        format="JPEG",
        exif=gps_exif(orientation),
        xmp=XMP,
        comment=b"taken at home",
        quality=90,
    )
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def ihdr(width: int, height: int, colour_type: int = 0) -> bytes:
    return png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0))


def bomb_png(width: int = 100_000, height: int = 100_000, zeros: int = 64 * 1024 * 1024) -> bytes:
    """A valid PNG header declaring width x height grey pixels, then `zeros` bytes of zero rows
    deflated (1000:1): a small file that a decoder would grow to width*height bytes."""
    deflate = zlib.compressobj(9)
    block = bytes(1024 * 1024)
    data = b"".join(deflate.compress(block) for _ in range(zeros // len(block)))
    data += deflate.flush()
    return PNG_SIGNATURE + ihdr(width, height) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def png_prefix(idat_length: int, size: tuple[int, int] = (1000, 1000)) -> bytes:
    """The start of a well-formed PNG whose one IDAT chunk announces `idat_length` bytes: what a
    large image's first bytes look like (for size-limit tests, which send the rest as zeros)."""
    return PNG_SIGNATURE + ihdr(*size) + struct.pack(">I", idat_length) + b"IDAT"


def frames_of(data: bytes) -> int:
    with Image.open(io.BytesIO(data)) as image:
        return int(getattr(image, "n_frames", 1))


def animated(fmt: str, frames: int = 3, **save: Any) -> bytes:
    images = [Image.new("RGB", (10, 8), (40 * i, 100, 200 - 40 * i)) for i in range(frames)]
    buffer = io.BytesIO()
    images[0].save(
        buffer, format=fmt, save_all=True, append_images=images[1:], duration=100, loop=0, **save
    )
    return buffer.getvalue()
