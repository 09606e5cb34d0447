"""What stripping metadata costs an upload, per MB, against the copy it replaces and the
re-encode it avoids.

Run by hand: `.venv/bin/python -m bench.upload_sanitise_cost` (about half a minute). For a
~5 MB phone-like JPEG (noise at quality 95, EXIF with GPS and an orientation, XMP) and a ~5 MB
PNG (with text chunks) and a ~5 MB two-frame GIF (its 255-byte sub-blocks are the one walk done
a block at a time in Python), it times, in this process, file to file as the upload service does:

- `copy+sha256`: reading the staged file and writing it out while hashing (the floor: what
  publishing the upload's own bytes would cost with a second file);
- `strip_metadata`: the same with app/services/image_metadata.py walking the structure;
- `Pillow re-encode`: the alternative (decode, save without metadata), for scale.

CPU time (`time.process_time`, user+system) per run, median of the rounds, and per MB of input.
Pillow is a dev dependency only: the app never decodes an image.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image, PngImagePlugin

from app.services.image_metadata import strip_metadata
from tests.support.images import XMP, gps_exif

MB = 1024 * 1024
PIECE = 64 * 1024


def phone_jpeg() -> bytes:
    noise = Image.effect_noise((2600, 1950), 80).convert("RGB")
    buffer = io.BytesIO()
    noise.save(buffer, format="JPEG", quality=95, exif=gps_exif(6), xmp=XMP)
    return buffer.getvalue()


def text_png() -> bytes:
    noise = Image.effect_noise((1800, 1700), 40).convert("RGB")
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Jane Doe")
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    buffer = io.BytesIO()
    noise.save(buffer, format="PNG", pnginfo=info, compress_level=1)
    return buffer.getvalue()


def noise_gif() -> bytes:
    """Two frames of noise: GIF's LZW barely compresses it, so ~5 MB of 255-byte sub-blocks."""
    frames = [Image.effect_noise((1600, 1500), 90).convert("P") for _ in range(2)]
    buffer = io.BytesIO()
    frames[0].save(
        buffer, format="GIF", save_all=True, append_images=frames[1:], comment=b"at home"
    )
    return buffer.getvalue()


def copy_and_hash(source: Path, target: Path) -> None:
    digest = hashlib.sha256()
    with source.open("rb") as src, target.open("wb") as out:
        while piece := src.read(PIECE):
            digest.update(piece)
            out.write(piece)


def sanitise(extension: str) -> Callable[[Path, Path], None]:
    def run(source: Path, target: Path) -> None:
        digest = hashlib.sha256()

        def write(data: bytes) -> None:
            digest.update(data)
            out.write(data)

        with source.open("rb") as src, target.open("wb") as out:
            strip_metadata(extension, src, write, 40_000_000)

    return run


def reencode(fmt: str) -> Callable[[Path, Path], None]:
    def run(source: Path, target: Path) -> None:
        with Image.open(source) as image:
            image.save(target, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))

    return run


def cpu_ms(action: Callable[[Path, Path], None], source: Path, target: Path, rounds: int) -> float:
    action(source, target)  # warm: imports, page cache
    timings = []
    for _ in range(rounds):
        start = time.process_time()
        action(source, target)
        timings.append((time.process_time() - start) * 1000)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        print(f"{'image':<26}{'action':<18}{'CPU ms':>9}{'ms/MB':>9}")
        for label, data, extension, fmt in (
            ("JPEG (phone-like)", phone_jpeg(), "jpg", "JPEG"),
            ("PNG (text chunks)", text_png(), "png", "PNG"),
            ("GIF (2 frames)", noise_gif(), "gif", "GIF"),
        ):
            source, target = root / f"in.{extension}", root / f"out.{extension}"
            source.write_bytes(data)
            size_mb = len(data) / MB
            for action, run in (
                ("copy+sha256", copy_and_hash),
                ("strip_metadata", sanitise(extension)),
                ("Pillow re-encode", reencode(fmt)),
            ):
                rounds = args.rounds if action != "Pillow re-encode" else max(3, args.rounds // 3)
                ms = cpu_ms(run, source, target, rounds)
                name = f"{label} {size_mb:.1f} MB"
                print(f"{name:<26}{action:<18}{ms:>9.1f}{ms / size_mb:>9.2f}")


if __name__ == "__main__":
    main()
