"""app/services/image_metadata.py on crafted files: what is dropped, what is kept byte for byte,
and what is refused (lying lengths, truncation, bad CRCs, too many pixels)."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import pytest
from PIL import ExifTags, Image, PngImagePlugin

from app.core.error_handlers import ValidationFailedError
from app.services import image_metadata
from app.services.image_metadata import (
    MAX_PARTS,
    ImageInfo,
    check_head,
    exif_orientation,
    orientation_segment,
    strip_metadata,
)
from tests.support.images import (
    PNG_SIGNATURE,
    XMP,
    animated,
    bomb_png,
    frames_of,
    gps_exif,
    gradient,
    ihdr,
    image_bytes,
    jpeg_with_gps,
    png_chunk,
)

LIMIT = 40_000_000


def clean(extension: str, data: bytes, max_pixels: int = LIMIT) -> tuple[bytes, ImageInfo]:
    out = io.BytesIO()
    info = strip_metadata(extension, io.BytesIO(data), out.write, max_pixels)
    return out.getvalue(), info


def refused(extension: str, data: bytes, max_pixels: int = LIMIT) -> str:
    with pytest.raises(ValidationFailedError) as caught:
        clean(extension, data, max_pixels)
    return caught.value.messages[0]


def pixels(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGBA").tobytes()


def jpeg_segments(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, payload) of every segment before the first scan's data."""
    found, offset = [], 2
    while True:
        marker = data[offset + 1]
        (length,) = struct.unpack(">H", data[offset + 2 : offset + 4])
        found.append((marker, data[offset + 4 : offset + 2 + length]))
        offset += 2 + length
        if marker == 0xDA:
            return found


def scan_data(data: bytes) -> bytes:
    """Everything from the first SOS segment on: the compressed pixels."""
    return data[data.index(b"\xff\xda") :]


@pytest.mark.parametrize(("fmt", "extension"), [("PNG", "png"), ("JPEG", "jpg"), ("GIF", "gif")])
def test_an_image_without_metadata_is_copied_byte_for_byte(fmt: str, extension: str) -> None:
    data = image_bytes(fmt)
    assert clean(extension, data) == (data, ImageInfo(8, 6, 1))


def test_a_webp_without_metadata_is_copied_byte_for_byte() -> None:
    data = image_bytes("WEBP")
    assert clean("webp", data) == (data, ImageInfo(8, 6, 1))


# --- JPEG -------------------------------------------------------------------------------------


def test_jpeg_loses_gps_xmp_and_comment_but_keeps_its_scan_and_orientation() -> None:
    data = jpeg_with_gps(orientation=6)
    assert b"PhoneMaker" in data
    assert b"GPSLatitude" in data
    assert b"taken at home" in data
    cleaned, info = clean("jpg", data)
    assert info == ImageInfo(64, 48, 1)
    for secret in (b"PhoneMaker", b"Phone 15", b"2026:11:30", b"GPSLatitude", b"xmpmeta", b"home"):
        assert secret not in cleaned
    with Image.open(io.BytesIO(cleaned)) as image:
        exif = image.getexif()
        assert dict(exif) == {ExifTags.Base.Orientation: 6}
        assert exif.get_ifd(ExifTags.IFD.GPSInfo) == {}
        assert "xmp" not in image.info
        assert "comment" not in image.info
    assert scan_data(cleaned) == scan_data(data)
    assert pixels(cleaned) == pixels(data)


@pytest.mark.parametrize("orientation", [None, 1])
def test_jpeg_without_a_turn_gets_no_exif_at_all(orientation: int | None) -> None:
    cleaned, _ = clean("jpg", jpeg_with_gps(orientation=orientation))
    assert b"Exif" not in cleaned
    assert [marker for marker, _ in jpeg_segments(cleaned)].count(0xE1) == 0


def test_only_the_first_of_several_exif_segments_counts_and_all_go() -> None:
    base = image_bytes("JPEG")
    first = orientation_segment(3)
    second = orientation_segment(8)
    xmp = b"\xff\xe1" + struct.pack(">H", len(XMP) + 31) + b"http://ns.adobe.com/xap/1.0/\x00" + XMP
    data = base[:2] + first + xmp + second + base[2:]
    cleaned, _ = clean("jpg", data)
    segments = jpeg_segments(cleaned)
    assert [payload for marker, payload in segments if marker == 0xE1] == [first[4:]]
    assert b"xmpmeta" not in cleaned
    assert cleaned == base[:2] + first + base[2:]


def test_icc_profile_and_adobe_segments_are_kept_other_app_segments_go() -> None:
    base = image_bytes("JPEG")
    icc = b"\xff\xe2\x00\x14ICC_PROFILE\x00\x01\x01abcd"
    adobe = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x01"
    mpf = b"\xff\xe2\x00\x0bMPF\x00IIxx\x00"
    iptc = b"\xff\xed\x00\x10Photoshop 3.0\x00"
    data = base[:2] + icc + mpf + iptc + adobe + base[2:]
    cleaned, _ = clean("jpg", data)
    assert cleaned == base[:2] + icc + adobe + base[2:]


def test_a_jfif_thumbnail_is_dropped_and_the_header_kept() -> None:
    base = image_bytes("JPEG")
    app0 = jpeg_segments(base)[0]
    assert app0[0] == 0xE0
    thumbnail = app0[1][:12] + b"\x02\x01" + bytes(6)  # a 2x1 RGB thumbnail
    data = base[:2] + b"\xff\xe0" + struct.pack(">H", len(thumbnail) + 2) + thumbnail
    data += base[6 + len(app0[1]) :]
    assert clean("jpg", data)[0] == base


def test_what_follows_the_end_of_image_is_dropped() -> None:
    base = image_bytes("JPEG")
    appended = jpeg_with_gps()  # phones append previews (with their own EXIF) after EOI
    cleaned, _ = clean("jpg", base + appended)
    assert cleaned == base


def test_a_jpeg_scan_spanning_pieces_with_0xff_at_the_edges_is_copied_exactly() -> None:
    # 1 MB of noise: many pieces, stuffed 0xFF00 and restart markers inside the scan.
    buffer = io.BytesIO()
    noise = Image.effect_noise((1024, 1024), 120).convert("RGB")
    noise.save(buffer, format="JPEG", quality=100, exif=gps_exif(8))
    data = buffer.getvalue()
    assert len(data) > 500_000
    cleaned, info = clean("jpg", data)
    assert info == ImageInfo(1024, 1024, 1)
    assert scan_data(cleaned) == scan_data(data)
    assert exif_orientation(jpeg_segments(cleaned)[1][1][6:]) == 8


def test_progressive_jpeg_keeps_every_scan() -> None:
    buffer = io.BytesIO()
    gradient((300, 200)).save(buffer, format="JPEG", progressive=True, exif=gps_exif(6))
    data = buffer.getvalue()
    assert data.count(b"\xff\xda") > 1
    cleaned, _ = clean("jpg", data)
    assert scan_data(cleaned) == scan_data(data)
    assert pixels(cleaned) == pixels(data)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda d: d[: len(d) // 2], "(it ends early)"),
        (lambda d: d[:-2], "(it ends early)"),
        (lambda d: d[:2] + b"\xff\xe1\xff\xf0Exif\x00\x00" + d[2:], "(it ends early)"),
        (lambda d: d[:2] + b"\xff\xfe\x00\x01" + d[2:], "has length 1"),
        (lambda d: d[:2] + b"garbage" + d[2:], "data where a marker should be"),
        (lambda d: b"\xff\xd8\xff\xd9", "no image data"),
    ],
    ids=["half", "no-eoi", "length-past-the-end", "length-below-2", "junk", "empty"],
)
def test_malformed_jpegs_are_refused(mangle: object, message: str) -> None:
    data = mangle(jpeg_with_gps())  # type: ignore[operator]
    text = refused("jpg", data)
    assert text.startswith("file is not a valid JPEG image")
    assert message in text


def test_jpeg_dimensions_bound_the_pixels() -> None:
    data = image_bytes("JPEG", (100, 40))
    assert clean("jpg", data, max_pixels=4000)[1] == ImageInfo(100, 40, 1)
    assert refused("jpg", data, max_pixels=3999) == (
        "image must be at most 3999 pixels (got 100x40)"
    )


def test_exif_orientation_survives_lying_offsets() -> None:
    good = orientation_segment(6)[10:]
    assert exif_orientation(good) == 6
    assert exif_orientation(good.replace(b"\x00\x00\x00\x08", b"\x00\x00\xff\xff", 1)) is None
    assert exif_orientation(good[:12]) is None  # IFD says one entry, none there
    assert exif_orientation(b"II*\x00" + struct.pack("<IH", 8, 60000)) is None
    assert exif_orientation(b"XX*\x00\x08\x00\x00\x00") is None
    little = b"II*\x00" + struct.pack("<IHHHIHH", 8, 1, 0x0112, 3, 1, 9, 0)
    assert exif_orientation(little) is None  # 9 is not an orientation
    assert exif_orientation(little[:-4] + struct.pack("<HH", 8, 0)) == 8


# --- PNG --------------------------------------------------------------------------------------


def png_with_metadata() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Jane Doe")
    info.add_text("Comment", "compressed secret", zip=True)
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    buffer = io.BytesIO()
    gradient().save(buffer, format="PNG", pnginfo=info, exif=gps_exif(6), dpi=(300, 300))
    data = buffer.getvalue()
    time_chunk = png_chunk(b"tIME", struct.pack(">HBBBBB", 2026, 11, 30, 18, 42, 7))
    return data[:33] + time_chunk + data[33:] + png_chunk(b"tEXt", b"after\x00the end")


def png_chunks(data: bytes) -> list[bytes]:
    kinds, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kinds.append(data[offset + 4 : offset + 8])
        offset += 12 + length
    return kinds


def test_png_loses_text_xmp_exif_and_time_but_keeps_pixels_and_density() -> None:
    data = png_with_metadata()
    assert {b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"tIME"} <= set(png_chunks(data))
    cleaned, info = clean("png", data)
    assert info == ImageInfo(64, 48, 1)
    assert png_chunks(cleaned) == [b"IHDR", b"pHYs", b"IDAT", b"IEND"]
    assert pixels(cleaned) == pixels(data)
    for secret in (b"Jane", b"xmpmeta", b"GPS", b"after"):
        assert secret not in cleaned
    with Image.open(io.BytesIO(cleaned)) as image:
        assert round(image.info["dpi"][0]) == 300


def test_apng_keeps_its_frames() -> None:
    data = animated("PNG", frames=4)
    cleaned, info = clean("png", data)
    assert cleaned == data
    assert info.frames == 4
    assert frames_of(cleaned) == 4


def minimal_png(*extra: bytes) -> bytes:
    idat = png_chunk(b"IDAT", zlib.compress(b"\x00\x00" * 2))
    return PNG_SIGNATURE + ihdr(1, 2) + b"".join(extra) + idat + png_chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (minimal_png()[:-6], "(it ends early)"),
        (minimal_png().replace(b"IEND\xae", b"IEND\xaf"), "(bad CRC in IEND)"),
        (minimal_png(png_chunk(b"ZZZZ", b"x")), "(unknown critical chunk ZZZZ)"),
        (minimal_png(ihdr(1, 2)), "(IHDR must come first, once)"),
        (PNG_SIGNATURE + png_chunk(b"tEXt", b"a\x00b") + minimal_png()[8:], "(IHDR must come"),
        (PNG_SIGNATURE + ihdr(1, 2) + png_chunk(b"IEND", b""), "(no image data)"),
        (PNG_SIGNATURE + ihdr(0, 2) + png_chunk(b"IEND", b""), "(zero width or height)"),
        (minimal_png(b"\xff\xff\xff\xffIDAT"), "(bad chunk header)"),
        (minimal_png(b"\x00\x00\x00\x01I D "), "(bad chunk header)"),
        (minimal_png(b"\x00\x10\x00\x00tEXt"), "(it ends early)"),
    ],
    ids=[
        "truncated",
        "bad-crc",
        "unknown-critical",
        "two-ihdr",
        "ihdr-not-first",
        "no-idat",
        "zero-width",
        "huge-length",
        "bad-type",
        "length-past-the-end",
    ],
)
def test_malformed_pngs_are_refused(data: bytes, message: str) -> None:
    text = refused("png", data)
    assert text.startswith("file is not a valid PNG image")
    assert message in text


def test_png_pixel_limit_counts_ihdr_and_every_frame() -> None:
    assert refused("png", bomb_png(zeros=1024 * 1024)) == (
        f"image must be at most {LIMIT} pixels (got 100000x100000)"
    )
    data = minimal_png()
    assert clean("png", data, max_pixels=2)[1] == ImageInfo(1, 2, 1)
    assert "(got 1x2)" in refused("png", data, max_pixels=1)
    frame = png_chunk(b"fcTL", struct.pack(">IIIIIHHBB", 0, 5000, 5000, 0, 0, 1, 10, 0, 0))
    assert "(got 5000x5000)" in refused("png", minimal_png(frame), max_pixels=1000)


# --- GIF --------------------------------------------------------------------------------------


def gif_extension(label: int, *blocks: bytes) -> bytes:
    return b"\x21" + bytes((label,)) + b"".join(bytes((len(b),)) + b for b in blocks) + b"\x00"


def test_gif_loses_comments_and_xmp_but_keeps_animation() -> None:
    data = animated("GIF", frames=3, comment=b"made at home")
    assert b"made at home" in data
    xmp = gif_extension(0xFF, b"XMP DataXMP", XMP[:200], XMP[200:])
    trailer_at = data.rindex(b"\x3b")
    with_xmp = data[:trailer_at] + xmp + data[trailer_at:] + b"after the trailer"
    cleaned, info = clean("gif", with_xmp)
    assert (info.width, info.height, info.frames) == (10, 8, 3)
    assert b"made at home" not in cleaned
    assert b"XMP" not in cleaned
    assert b"after" not in cleaned
    assert b"NETSCAPE2.0" in cleaned
    assert frames_of(cleaned) == 3
    with Image.open(io.BytesIO(cleaned)) as image, Image.open(io.BytesIO(data)) as original:
        assert image.info.get("loop") == original.info.get("loop") == 0
        for frame in range(3):
            image.seek(frame)
            original.seek(frame)
            assert image.convert("RGB").tobytes() == original.convert("RGB").tobytes()


def test_gif_frames_bound_the_pixels_and_structure_is_checked() -> None:
    data = image_bytes("GIF", (10, 8))
    assert "(got 10x8)" in refused("gif", data, max_pixels=79)
    descriptor = data.index(b"\x2c")
    huge_frame = data[: descriptor + 5] + b"\xff\xff\xff\xff" + data[descriptor + 9 :]
    assert "(got 65535x65535)" in refused("gif", huge_frame)
    assert "(it ends early)" in refused("gif", data[:-1])
    assert "(unknown block 0x00)" in refused("gif", data[:-1] + b"\x00")
    no_table = data[:10] + bytes((data[10] & 0x7F,)) + data[11:13]
    assert "(no image data)" in refused("gif", no_table + b"\x3b")


# --- WebP -------------------------------------------------------------------------------------


def riff_chunks(data: bytes) -> list[bytes]:
    kinds, offset = [], 12
    while offset < len(data):
        kind, size = struct.unpack("<4sI", data[offset : offset + 8])
        kinds.append(kind)
        offset += 8 + size + (size & 1)
    return kinds


def test_webp_loses_exif_and_xmp_and_its_flags_and_size_are_rewritten() -> None:
    buffer = io.BytesIO()
    gradient().save(buffer, format="WEBP", exif=gps_exif(6), xmp=XMP, quality=90)
    data = buffer.getvalue()
    assert {b"EXIF", b"XMP "} <= set(riff_chunks(data))
    cleaned, info = clean("webp", data + b"trailing")
    assert info == ImageInfo(64, 48, 1)
    assert b"EXIF" not in riff_chunks(cleaned)
    assert b"XMP " not in riff_chunks(cleaned)
    assert struct.unpack("<I", cleaned[4:8])[0] == len(cleaned) - 8
    assert cleaned[20] & 0x0C == 0  # VP8X's EXIF and XMP flags
    assert b"GPS" not in cleaned
    assert b"xmpmeta" not in cleaned
    assert pixels(cleaned) == pixels(data)
    with Image.open(io.BytesIO(cleaned)) as image:
        assert "exif" not in image.info


def test_animated_webp_keeps_its_frames() -> None:
    data = animated("WEBP", frames=3, lossless=True)
    cleaned, info = clean("webp", data)
    assert cleaned == data
    assert info.frames == 3
    assert frames_of(cleaned) == 3


def test_webp_structure_and_canvas_are_checked() -> None:
    data = image_bytes("WEBP", (30, 20))
    assert "(got 30x20)" in refused("webp", data, max_pixels=599)
    assert "(it ends early)" in refused("webp", data[:-4])
    longer = data[:4] + struct.pack("<I", len(data)) + data[8:]
    assert "(it ends early)" in refused("webp", longer)
    assert "(no image header)" in refused("webp", data[:12] + b"JUNK\x00\x00\x00\x00" + data[12:])
    canvas = b"VP8X" + struct.pack("<I", 10) + b"\x00" * 4 + b"\xff\xff\x00" * 2
    oversized = b"RIFF" + struct.pack("<I", 4 + len(canvas)) + b"WEBP" + canvas
    assert "(got 65536x65536)" in refused("webp", oversized)


# --- the cost of a crafted file -------------------------------------------------------------


@pytest.mark.parametrize(
    ("extension", "make"),
    [
        ("jpg", lambda d: d[:2] + b"\xff\xfe\x00\x02" * MAX_PARTS + d[2:]),
        ("jpg", lambda d: d[:2] + b"\xff" * MAX_PARTS + d[2:]),
        ("png", lambda d: d[:33] + png_chunk(b"tEXt", b"") * MAX_PARTS + d[33:]),
        ("gif", lambda d: d[:-1] + b"\x21\xfe" + b"\x01a" * MAX_PARTS + b"\x00\x3b"),
        ("webp", lambda d: d[:12] + d[12:] + b"JUNK\x00\x00\x00\x00" * MAX_PARTS),
    ],
    ids=["jpeg-segments", "jpeg-fill", "png-chunks", "gif-sub-blocks", "webp-chunks"],
)
def test_a_file_of_countless_tiny_parts_is_refused(
    extension: str, make: Callable[[bytes], bytes]
) -> None:
    fmt = {"jpg": "JPEG", "png": "PNG", "gif": "GIF", "webp": "WEBP"}[extension]
    data = make(image_bytes(fmt))
    if extension == "webp":
        data = data[:4] + struct.pack("<I", len(data) - 8) + data[8:]
    assert f"(more than {MAX_PARTS} segments, chunks or blocks)" in refused(extension, data)


def test_a_real_gif_of_full_sub_blocks_is_far_from_the_part_limit() -> None:
    data = Image.effect_noise((1500, 1500), 90).convert("P")
    buffer = io.BytesIO()
    data.save(buffer, format="GIF")
    assert len(buffer.getvalue()) > 2 * 1024 * 1024  # ~9000 sub-blocks of 255 bytes
    assert clean("gif", buffer.getvalue())[0] == buffer.getvalue()


@pytest.mark.parametrize("piece", [1, 2, 3, 5, 7, 64])
def test_every_read_boundary_gives_the_same_copy(
    monkeypatch: pytest.MonkeyPatch, piece: int
) -> None:
    # Reads of a few bytes put every marker, fill byte and chunk header across a boundary.
    buffer = io.BytesIO()
    gradient((40, 30)).save(buffer, format="JPEG", progressive=True, exif=gps_exif(6))
    jpeg = buffer.getvalue()[:2] + b"\xff\xff" + buffer.getvalue()[2:]  # fill bytes too
    samples = {
        "jpg": jpeg,
        "png": png_with_metadata(),
        "gif": animated("GIF", comment=b"c"),
        "webp": animated("WEBP", lossless=True),
    }
    expected = {extension: clean(extension, data) for extension, data in samples.items()}
    monkeypatch.setattr(image_metadata, "PIECE_BYTES", piece)
    for extension, data in samples.items():
        assert clean(extension, data) == expected[extension], extension


# --- the early check on a head --------------------------------------------------------------


def test_check_head_refuses_what_it_can_see_and_lets_a_short_head_through() -> None:
    bomb = bomb_png(zeros=16 * 1024 * 1024)
    with pytest.raises(ValidationFailedError, match="100000x100000"):
        check_head("png", bomb[: 64 * 1024], LIMIT)
    check_head("png", minimal_png()[:40], LIMIT)
    check_head("jpg", jpeg_with_gps()[:300], LIMIT)
    with pytest.raises(ValidationFailedError, match="bad chunk header"):
        check_head("png", PNG_SIGNATURE + bytes(64 * 1024), LIMIT)
