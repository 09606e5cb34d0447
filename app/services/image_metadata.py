"""Strip metadata from an uploaded image and bound its decoded size, without decoding it.

Each format's container is walked and copied except for the parts that carry metadata: EXIF
(camera, time, GPS position), XMP, IPTC, comments, text chunks, and the extra images some
phones append after a JPEG's end (they have EXIF of their own). Pixel data is copied byte for
byte, so quality is untouched and memory stays flat (at most a 64 KiB piece or one JPEG segment
is held); re-encoding would cost a full decode per upload and lose quality.

What is kept: what decoders need and what changes how the pixels look (ICC profiles, gamma,
JPEG's Adobe colour transform, PNG's physical density, animation control). A JPEG's EXIF
Orientation survives as a new one-tag EXIF segment, so phone photos still display upright.

The dimensions come from the headers (JPEG SOFn, PNG IHDR/fcTL, GIF screen and frames, WebP
VP8X/ANMF/VP8/VP8L): an image whose width*height exceeds the limit is refused before anything
decodes it (a 10 MB file can declare 100000x100000 pixels, 30 GB once decoded). Malformed or
truncated structure is refused too: what cannot be walked cannot be cleaned; so is a file of more
than MAX_PARTS segments, chunks or blocks, each a turn of a Python loop (real images have a few
thousand; 10 MB of 4-byte ones cost 2.8 s of CPU before the bound, under 0.1 s with it).

One module for the four formats, past the house's ~200 lines: they share the reader, the
refusals and the entry points, and each walker is read against the others.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from app.core.error_handlers import ValidationFailedError

Write = Callable[[bytes], object]
PIECE_BYTES = 64 * 1024
MAX_PARTS = 50_000
FORMAT_NAMES = {"png": "PNG", "jpg": "JPEG", "gif": "GIF", "webp": "WebP"}


class TruncatedImageError(ValidationFailedError):
    """The file ends before its structure does (a header check on a partial file expects it)."""


@dataclass(frozen=True, slots=True)
class ImageInfo:
    width: int
    height: int
    frames: int


class _Source:
    """Exact reads over a seekable file through a buffer read by offset: a small read copies
    only what it returns, and the JPEG scan is searched where it lies."""

    def __init__(self, handle: BinaryIO, kind: str) -> None:
        self.handle = handle
        self.kind = kind
        self.buffer = b""
        self.pos = 0
        self.parts = 0

    def malformed(self, why: str) -> ValidationFailedError:
        return ValidationFailedError(f"file is not a valid {FORMAT_NAMES[self.kind]} image ({why})")

    def truncated(self) -> TruncatedImageError:
        name = FORMAT_NAMES[self.kind]
        return TruncatedImageError(f"file is not a valid {name} image (it ends early)")

    def count_part(self) -> None:
        """One more segment, chunk, block or short sub-block. Each costs a turn of a Python
        loop: a 10 MB file of 4-byte segments would hold the GIL for seconds (measured 2.8 s),
        where real images have a few thousand parts at most."""
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise self.malformed(f"more than {MAX_PARTS} segments, chunks or blocks")

    def _fill(self) -> None:
        piece = self.handle.read(PIECE_BYTES)
        if not piece:
            raise self.truncated()
        self.buffer = self.buffer[self.pos :] + piece
        self.pos = 0

    def read(self, size: int) -> bytes:
        while len(self.buffer) - self.pos < size:
            self._fill()
        data = self.buffer[self.pos : self.pos + size]
        self.pos += size
        return data

    def copy(self, size: int, write: Write, crc: int = 0) -> int:
        """Copy `size` bytes in pieces; the CRC-32 of what was copied, continuing `crc`."""
        while size:
            if self.pos < len(self.buffer):
                piece = self.buffer[self.pos : self.pos + size]
                self.pos += len(piece)
            elif not (piece := self.handle.read(min(size, PIECE_BYTES))):
                raise self.truncated()
            crc = zlib.crc32(piece, crc)
            write(piece)
            size -= len(piece)
        return crc

    def copy_until(self, pattern: re.Pattern[bytes], write: Write) -> None:
        """Copy up to the first match of a two-byte `pattern`, which is left unread."""
        while not (found := pattern.search(self.buffer, self.pos)):
            # The last byte may be the first of a match completed by the next piece.
            keep = max(self.pos, len(self.buffer) - 1)
            write(self.buffer[self.pos : keep])
            self.pos = keep
            self._fill()
        write(self.buffer[self.pos : found.start()])
        self.pos = found.start()

    def skip(self, size: int) -> None:
        beyond = size - (len(self.buffer) - self.pos)
        if beyond <= 0:
            self.pos += size
            return
        self.buffer, self.pos = b"", 0
        self.handle.seek(beyond, io.SEEK_CUR)

    def seek(self, offset: int) -> None:
        self.buffer, self.pos = b"", 0
        self.handle.seek(offset)


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ValidationFailedError(
            f"image must be at most {max_pixels} pixels (got {width}x{height})"
        )


# --- JPEG -----------------------------------------------------------------------------------

# Start of frame: every coding process (C4 DHT, C8 JPG and CC DAC are not frames).
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})
SOS, EOI, APP0, APP1, APP2, APP14, COM = 0xDA, 0xD9, 0xE0, 0xE1, 0xE2, 0xEE, 0xFE
# The end of entropy-coded data: 0xFF followed by anything but stuffing (00), RSTn or fill (FF).
SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
ORIENTATION_TAG = 0x0112


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def exif_orientation(tiff: bytes) -> int | None:
    """IFD0's Orientation (1-8) in an EXIF TIFF block; None when absent or unreadable."""
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or len(tiff) < 8 or struct.unpack(order + "H", tiff[2:4])[0] != 42:
        return None
    ifd = struct.unpack(order + "I", tiff[4:8])[0]
    if ifd + 2 > len(tiff):
        return None
    (count,) = struct.unpack(order + "H", tiff[ifd : ifd + 2])
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        if entry + 12 > len(tiff):
            return None
        tag, kind, values, value = struct.unpack(order + "HHIH", tiff[entry : entry + 10])
        if tag == ORIENTATION_TAG:
            return value if kind == 3 and values == 1 and 1 <= value <= 8 else None
    return None


def orientation_segment(orientation: int) -> bytes:
    """An APP1 EXIF segment holding only IFD0's Orientation."""
    tiff = b"MM\x00\x2a" + struct.pack(">IH", 8, 1)
    tiff += struct.pack(">HHIHH", ORIENTATION_TAG, 3, 1, orientation, 0) + struct.pack(">I", 0)
    return _segment(APP1, b"Exif\x00\x00" + tiff)


class _JpegCleaner:
    def __init__(self, source: _Source, write: Write, max_pixels: int) -> None:
        self.src, self.write, self.max_pixels = source, write, max_pixels
        self.size: tuple[int, int] | None = None
        self.exif_seen = False
        self.scans = 0

    def run(self) -> ImageInfo:
        if self.src.read(2) != b"\xff\xd8":
            raise self.src.malformed("no start of image")
        self.write(b"\xff\xd8")
        while (marker := self._next_marker()) != EOI:
            self.src.count_part()
            if marker in STANDALONE_MARKERS:
                self.write(bytes((0xFF, marker)))
                continue
            (length,) = struct.unpack(">H", self.src.read(2))
            if length < 2:
                raise self.src.malformed(f"segment 0x{marker:02X} has length {length}")
            payload = self.src.read(length - 2)
            if APP0 <= marker <= 0xEF or marker == COM:
                self._metadata(marker, payload)
                continue
            if marker in SOF_MARKERS:
                self._frame(payload)
            elif marker == SOS and self.size is None:
                raise self.src.malformed("scan before frame header")
            self.write(_segment(marker, payload))
            if marker == SOS:
                self.src.copy_until(SCAN_END, self.write)
                self.scans += 1
        if not self.scans or self.size is None:
            raise self.src.malformed("no image data")
        # Anything after EOI (phones append preview and depth images there) is left behind.
        self.write(b"\xff\xd9")
        return ImageInfo(self.size[0], self.size[1], 1)

    def _next_marker(self) -> int:
        if self.src.read(1) != b"\xff":
            raise self.src.malformed("data where a marker should be")
        while (code := self.src.read(1)[0]) == 0xFF:
            self.src.count_part()  # fill bytes
        if code == 0:
            raise self.src.malformed("data where a marker should be")
        return code

    def _frame(self, payload: bytes) -> None:
        if len(payload) < 6:
            raise self.src.malformed("short frame header")
        height, width = struct.unpack(">HH", payload[1:5])
        if not width or not height:
            raise self.src.malformed("frame of zero width or height")
        _check_pixels(width, height, self.max_pixels)
        self.size = (width, height)

    def _metadata(self, marker: int, payload: bytes) -> None:
        if marker == APP0 and payload.startswith(b"JFIF\x00") and len(payload) >= 14:
            # Version, density units and density; the optional thumbnail (pixels of the
            # original, before any crop) goes.
            self.write(_segment(APP0, payload[:12] + b"\x00\x00"))
        elif marker == APP1 and payload.startswith(b"Exif\x00") and not self.exif_seen:
            self.exif_seen = True  # readers use the first EXIF segment; so does this
            orientation = exif_orientation(payload[6:])
            if orientation is not None and orientation != 1:
                self.write(orientation_segment(orientation))
        elif (marker == APP2 and payload.startswith(b"ICC_PROFILE\x00")) or (
            marker == APP14 and payload.startswith(b"Adobe")
        ):
            self.write(_segment(marker, payload))


# --- PNG ------------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_KEPT = frozenset(
    {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"cHRM", b"gAMA", b"iCCP", b"sBIT", b"sRGB"}
    | {b"cICP", b"mDCV", b"mDCv", b"cLLI", b"cLLi", b"pHYs", b"bKGD", b"acTL", b"fcTL", b"fdAT"}
)
CHUNK_TYPE = re.compile(rb"[A-Za-z]{4}")


def _clean_png(src: _Source, write: Write, max_pixels: int) -> ImageInfo:
    if src.read(8) != PNG_SIGNATURE:
        raise src.malformed("bad signature")
    write(PNG_SIGNATURE)
    size: tuple[int, int] | None = None
    frames = 0
    has_data = False
    while True:
        src.count_part()
        header = src.read(8)
        length, kind = struct.unpack(">I4s", header)
        if not CHUNK_TYPE.fullmatch(kind) or length > 0x7FFFFFFF:
            raise src.malformed("bad chunk header")
        if (size is None) != (kind == b"IHDR"):
            raise src.malformed("IHDR must come first, once")
        if kind not in PNG_KEPT:
            if kind[0] & 0x20 == 0:  # upper case: critical, a decoder could not skip it
                raise src.malformed(f"unknown critical chunk {kind.decode()}")
            src.skip(length + 4)
            continue
        if kind in (b"IHDR", b"fcTL"):
            data = src.read(length)
            if len(data) != {b"IHDR": 13, b"fcTL": 26}[kind]:
                raise src.malformed(f"{kind.decode()} has length {length}")
            width, height = struct.unpack(">II", data[:8] if kind == b"IHDR" else data[4:12])
            if not width or not height:
                raise src.malformed("zero width or height")
            _check_pixels(width, height, max_pixels)
            size = size or (width, height)
            frames += kind == b"fcTL"
            write(header + data)
            crc = zlib.crc32(data, zlib.crc32(kind))
        else:
            write(header)
            crc = src.copy(length, write, zlib.crc32(kind))
        stored = src.read(4)
        if struct.unpack(">I", stored)[0] != crc:
            raise src.malformed(f"bad CRC in {kind.decode()}")
        write(stored)
        has_data = has_data or kind == b"IDAT"
        if kind == b"IEND":
            break  # anything after IEND is left behind
    if size is None or not has_data:
        raise src.malformed("no image data")
    return ImageInfo(size[0], size[1], max(frames, 1))


# --- GIF ------------------------------------------------------------------------------------

GIF_ANIMATION_APPS = frozenset({b"NETSCAPE2.0", b"ANIMEXTS1.0"})
GIF_GRAPHIC_CONTROL, GIF_PLAIN_TEXT, GIF_APPLICATION = 0xF9, 0x01, 0xFF


def _sub_blocks(src: _Source, write: Write | None) -> None:
    """Copy (or, without `write`, skip) a chain of data sub-blocks and its terminator."""
    pending = bytearray()
    while size := src.read(1)[0]:
        if size < 255:  # encoders fill sub-blocks; a short one ends a chain (but a crafted file)
            src.count_part()
        if write is not None:
            pending += bytes((size,)) + src.read(size)
            if len(pending) >= PIECE_BYTES:
                write(bytes(pending))
                pending.clear()
        else:
            src.read(size)
    if write is not None:
        write(bytes(pending) + b"\x00")


def _colour_table(src: _Source, packed: int, write: Write) -> None:
    if packed & 0x80:
        write(src.read(3 << ((packed & 0x07) + 1)))


def _clean_gif(src: _Source, write: Write, max_pixels: int) -> ImageInfo:
    header = src.read(13)
    if header[:6] not in (b"GIF87a", b"GIF89a"):
        raise src.malformed("bad signature")
    width, height = struct.unpack("<HH", header[6:10])
    _check_pixels(width, height, max_pixels)
    write(header)
    _colour_table(src, header[10], write)
    frames = 0
    while (block := src.read(1)) != b"\x3b":
        src.count_part()
        if block == b"\x2c":
            descriptor = src.read(9)
            frame_width, frame_height = struct.unpack("<HH", descriptor[4:8])
            _check_pixels(frame_width, frame_height, max_pixels)
            write(block + descriptor)
            _colour_table(src, descriptor[8], write)
            write(src.read(1))  # LZW minimum code size
            _sub_blocks(src, write)
            frames += 1
        elif block == b"\x21":
            label = src.read(1)[0]
            if label == GIF_APPLICATION:
                size = src.read(1)[0]
                identity = src.read(size)
                # XMP (and any other application's data) lives in application extensions.
                keep = identity[:11] in GIF_ANIMATION_APPS
                if keep:
                    write(block + bytes((label, size)) + identity)
                if size:  # a zero size was already the chain's terminator
                    _sub_blocks(src, write if keep else None)
            elif label in (GIF_GRAPHIC_CONTROL, GIF_PLAIN_TEXT):
                write(block + bytes((label,)))
                _sub_blocks(src, write)
            else:
                _sub_blocks(src, None)  # comments (0xFE) and unknown extensions
        else:
            raise src.malformed(f"unknown block 0x{block[0]:02X}")
    if not frames:
        raise src.malformed("no image data")
    write(b"\x3b")  # anything after the trailer is left behind
    return ImageInfo(width, height, frames)


# --- WebP -----------------------------------------------------------------------------------

WEBP_KEPT = frozenset({b"VP8X", b"VP8 ", b"VP8L", b"ALPH", b"ANIM", b"ANMF", b"ICCP"})
VP8X_EXIF_AND_XMP = 0x08 | 0x04


def _u24(data: bytes) -> int:
    return int.from_bytes(data[:3], "little")


def _webp_size(src: _Source, kind: bytes, data: bytes) -> tuple[int, int]:
    if kind == b"VP8X" and len(data) >= 10:
        return 1 + _u24(data[4:7]), 1 + _u24(data[7:10])
    if kind == b"ANMF" and len(data) >= 12:
        return 1 + _u24(data[6:9]), 1 + _u24(data[9:12])
    if kind == b"VP8 " and len(data) >= 10 and data[3:6] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[6:10])
        return width & 0x3FFF, height & 0x3FFF
    if kind == b"VP8L" and len(data) >= 5 and data[0] == 0x2F:
        bits = int.from_bytes(data[1:5], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    raise src.malformed(f"bad {kind.decode().strip()} header")


def _clean_webp(src: _Source, write: Write, max_pixels: int) -> ImageInfo:
    riff, riff_size, form = struct.unpack("<4sI4s", src.read(12))
    if riff != b"RIFF" or form != b"WEBP" or riff_size < 4:
        raise src.malformed("bad RIFF header")
    end = 8 + riff_size
    # First pass, headers only: which chunks stay, so the new RIFF size can be written first.
    kept: list[tuple[int, bytes, int]] = []
    canvas: tuple[int, int] | None = None
    frames = 0
    offset = 12
    while offset < end:
        src.count_part()
        kind, size = struct.unpack("<4sI", src.read(8))
        padded = size + (size & 1)
        if offset + 8 + padded > end:
            raise src.malformed(f"chunk {kind!r} runs past the end")
        if offset == 12 and kind not in (b"VP8X", b"VP8 ", b"VP8L"):
            raise src.malformed("no image header")
        head = b""
        if kind in (b"VP8X", b"ANMF", b"VP8 ", b"VP8L"):
            head = src.read(min(size, 16))
            width, height = _webp_size(src, kind, head)
            if not width or not height:
                raise src.malformed("zero width or height")
            _check_pixels(width, height, max_pixels)
            canvas = canvas or (width, height)
            frames += kind in (b"ANMF", b"VP8 ", b"VP8L")
        if kind in WEBP_KEPT:
            kept.append((offset, kind, 8 + padded))
        src.skip(padded - len(head))
        offset += 8 + padded
    src.seek(end - 1)
    src.read(1)  # the file really is as long as the RIFF header says
    if canvas is None or not frames:
        raise src.malformed("no image data")
    write(struct.pack("<4sI4s", b"RIFF", 4 + sum(size for _, _, size in kept), b"WEBP"))
    for offset, kind, size in kept:
        src.seek(offset)
        if kind == b"VP8X":
            chunk = src.read(size)
            write(chunk[:8] + bytes((chunk[8] & ~VP8X_EXIF_AND_XMP,)) + chunk[9:])
        else:
            src.copy(size, write)
    return ImageInfo(canvas[0], canvas[1], frames)


# --- entry points ---------------------------------------------------------------------------

CLEANERS: dict[str, Callable[[_Source, Write, int], ImageInfo]] = {
    "jpg": lambda src, write, max_pixels: _JpegCleaner(src, write, max_pixels).run(),
    "png": _clean_png,
    "gif": _clean_gif,
    "webp": _clean_webp,
}


def strip_metadata(extension: str, source: BinaryIO, write: Write, max_pixels: int) -> ImageInfo:
    """Copy the image in `source` (a seekable file of type `extension`) to `write` without its
    metadata. Raises ValidationFailedError when it is malformed or has more than `max_pixels`
    pixels (blocking: call it from a worker thread)."""
    return CLEANERS[extension](_Source(source, extension), write, max_pixels)


def check_head(extension: str, head: bytes, max_pixels: int) -> None:
    """Refuse, from its first bytes, an image that strip_metadata would refuse; a head that
    ends before the dimensions do is let through (the full pass decides)."""
    try:
        strip_metadata(extension, io.BytesIO(head), lambda _: None, max_pixels)
    except TruncatedImageError:
        return
