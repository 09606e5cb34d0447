"""A 50 MB upload against a real uvicorn process: refused with 413 while it streams, before the
body is read, and the server's memory (RSS) stays flat. Run with each storage: the local disk
and S3 (moto's emulator); with S3, a 9 MB image that is accepted also leaves RSS flat, because the
PUT streams from the staged file instead of reading it into memory. The metadata pass over an
accepted image streams too, and a decompression bomb (a small PNG declaring 100000x100000
pixels, 10 GB decoded) is refused with 422 from its header, nothing decoded, RSS flat."""

from __future__ import annotations

import asyncio
import io
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from PIL import Image

from devstack.s3 import ACCESS_KEY_ID, SECRET_ACCESS_KEY, MotoS3Server
from devstack.servers import PostgresServer
from tests.support.databases import fresh_database
from tests.support.images import PNG_SIGNATURE, bomb_png, ihdr, noise_image, png_prefix
from tests.support.live import LiveServer

pytestmark = pytest.mark.slow

FIFTY_MB = 50 * 1024 * 1024
PIECE = 64 * 1024


class RssSampler:
    """Highest RSS of a process, sampled every 20 ms in a thread while the block runs."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def s3_env(server: MotoS3Server) -> dict[str, str]:
    bucket = f"memory-{uuid.uuid4().hex[:12]}"
    server.create_bucket(bucket)
    return {
        "UPLOAD_STORAGE": "s3",
        "S3_ENDPOINT_URL": server.url,
        "S3_BUCKET": bucket,
        "S3_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "S3_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
    }


@pytest.fixture(scope="module", params=["local", "s3"])
def upload_server(
    request: pytest.FixtureRequest, postgres: PostgresServer, base_env: dict[str, str]
) -> Iterator[LiveServer]:
    upload_dir = Path(postgres.datadir).parent.parent / f"uploads-{uuid.uuid4().hex[:8]}"
    env = {**base_env, "DATABASE_URL": fresh_database(postgres), "UPLOAD_DIR": str(upload_dir)}
    if request.param == "s3":
        env.update(s3_env(request.getfixturevalue("s3_server")))
    with LiveServer(env) as server:
        yield server


@pytest.fixture(scope="module")
def token(upload_server: LiveServer) -> str:
    name = f"uploader{uuid.uuid4().hex[:8]}"
    user = {"username": name, "email": f"{name}@example.com", "password": "x" * 12}
    response = httpx.post(upload_server.url + "/api/users", json={"user": user}, timeout=30)
    assert response.status_code == 201, response.text
    value: str = response.json()["user"]["token"]
    return value


async def post_huge_body(
    server: LiveServer,
    token: str,
    *,
    chunked: bool,
    image_head: bytes = png_prefix(FIFTY_MB),
    total: int = FIFTY_MB,
) -> tuple[int, bytes, int]:
    """Send a `total`-byte multipart upload over a raw socket (the image's first bytes, then
    zeros), reading the answer while still sending.

    Returns (status, response body, bytes of the request body sent before the answer came).
    """
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
    ).encode() + image_head
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        (
            f"POST /api/uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Token {token}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n{framing}\r\n\r\n"
        ).encode()
    )
    sent = 0

    async def send_body() -> None:
        nonlocal sent
        piece = head + bytes(PIECE - len(head))
        while sent < total:
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece)
            await writer.drain()
            sent += len(piece)
            piece = bytes(PIECE)
            # Paced (~50 MB/s): the server keeps reading and discarding after its 413, so an
            # unpaced sender could push the whole body before this task notices the answer.
            await asyncio.sleep(0.001)

    sender = asyncio.create_task(send_body())
    try:
        status_line = await asyncio.wait_for(reader.readline(), timeout=60)
        headers = await reader.readuntil(b"\r\n\r\n")
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    length = next(
        int(line.split(b":")[1])
        for line in headers.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    body = await reader.readexactly(length)
    writer.close()
    return int(status_line.split()[1]), body, sent


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
async def test_fifty_megabytes_get_413_with_flat_memory(
    upload_server: LiveServer, token: str, chunked: bool
) -> None:
    assert upload_server.process is not None
    pid = upload_server.process.pid
    small = io.BytesIO()
    Image.new("RGB", (4, 4)).save(small, format="PNG")
    async with httpx.AsyncClient(base_url=upload_server.url) as http:
        warm = await http.post(
            "/api/uploads",
            files={"file": ("a.png", small.getvalue())},
            headers={"Authorization": f"Token {token}"},
        )
        assert warm.status_code == 201

    baseline = psutil.Process(pid).memory_info().rss
    with RssSampler(pid) as sampler:
        status, body, sent = await post_huge_body(upload_server, token, chunked=chunked)
    assert status == 413, body
    assert b'"payload_too_large"' in body
    # Refused while streaming: most of the 50 MB was never sent (read) at all.
    assert sent < FIFTY_MB / 2
    assert sampler.peak - baseline < 20 * 1024 * 1024, (baseline, sampler.peak)
    staged = Path(upload_server.env["UPLOAD_DIR"]) / ".incoming"
    assert list(staged.iterdir()) == []


def png_of_size(size: int) -> bytes:
    """A real PNG of random pixels, stored uncompressed: about `size` bytes."""
    side = int((size / 3) ** 0.5)
    return noise_image("PNG", (side, side), compress_level=0)


async def test_an_accepted_nine_megabyte_image_leaves_memory_flat(
    upload_server: LiveServer, token: str
) -> None:
    assert upload_server.process is not None
    pid = upload_server.process.pid
    headers = {"Authorization": f"Token {token}"}
    async with httpx.AsyncClient(base_url=upload_server.url, timeout=60) as http:
        warm = await http.post(
            "/api/uploads", files={"file": ("w.png", png_of_size(200_000))}, headers=headers
        )
        assert warm.status_code == 201, warm.text
        data = png_of_size(9 * 1024 * 1024)
        assert 8 * 1024 * 1024 < len(data) < 10 * 1024 * 1024
        baseline = psutil.Process(pid).memory_info().rss
        with RssSampler(pid) as sampler:
            response = await http.post(
                "/api/uploads", files={"file": ("big.png", data)}, headers=headers
            )
        assert response.status_code == 201, response.text
    # A storage that read the 9 MB file into memory would add at least 9 MB here.
    assert sampler.peak - baseline < 6 * 1024 * 1024, (baseline, sampler.peak)
    staged = Path(upload_server.env["UPLOAD_DIR"]) / ".incoming"
    assert list(staged.iterdir()) == []


async def test_a_decompression_bomb_gets_422_with_flat_memory(
    upload_server: LiveServer, token: str
) -> None:
    assert upload_server.process is not None
    pid = upload_server.process.pid
    headers = {"Authorization": f"Token {token}"}
    bomb = bomb_png()  # ~70 KB: 64 MB of deflated zero rows under a 100000x100000 header
    async with httpx.AsyncClient(base_url=upload_server.url, timeout=60) as http:
        warm = await http.post(
            "/api/uploads", files={"file": ("w.png", png_of_size(200_000))}, headers=headers
        )
        assert warm.status_code == 201, warm.text
        baseline = psutil.Process(pid).memory_info().rss
        with RssSampler(pid) as sampler:
            response = await http.post(
                "/api/uploads", files={"file": ("bomb.png", bomb)}, headers=headers
            )
    assert response.status_code == 422, response.text
    assert response.json()["errors"]["body"] == [
        "image must be at most 40000000 pixels (got 100000x100000)"
    ]
    # Decoding would need 10 GB; a decoder that even started would add far more than this.
    assert sampler.peak - baseline < 4 * 1024 * 1024, (baseline, sampler.peak)
    staged = Path(upload_server.env["UPLOAD_DIR"]) / ".incoming"
    assert list(staged.iterdir()) == []


async def test_a_bomb_header_is_refused_before_its_body_is_read(
    upload_server: LiveServer, token: str
) -> None:
    """9 MB whose first bytes declare 100000x100000 pixels: the answer comes from the header
    check on the first 64 KiB, while the client is still sending."""
    nine_mb = 9 * 1024 * 1024
    head = PNG_SIGNATURE + ihdr(100_000, 100_000) + nine_mb.to_bytes(4, "big") + b"IDAT"
    status, body, sent = await post_huge_body(
        upload_server, token, chunked=False, image_head=head, total=nine_mb
    )
    assert status == 422, body
    assert b"(got 100000x100000)" in body
    assert sent < nine_mb / 2
