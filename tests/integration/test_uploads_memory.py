"""A 50 MB upload against a real uvicorn process: refused with 413 while it streams, before the
body is read, and the server's memory (RSS) stays flat."""

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

from devstack.servers import PostgresServer
from tests.support.databases import fresh_database
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


@pytest.fixture(scope="module")
def upload_server(postgres: PostgresServer, base_env: dict[str, str]) -> Iterator[LiveServer]:
    upload_dir = Path(postgres.datadir).parent.parent / f"uploads-{uuid.uuid4().hex[:8]}"
    env = {**base_env, "DATABASE_URL": fresh_database(postgres), "UPLOAD_DIR": str(upload_dir)}
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
    server: LiveServer, token: str, *, chunked: bool
) -> tuple[int, bytes, int]:
    """Send a 50 MB multipart upload over a raw socket, reading the answer while still sending.

    Returns (status, response body, bytes of the request body sent before the answer came).
    """
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
    ).encode() + b"\x89PNG\r\n\x1a\n"
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {FIFTY_MB}"
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
        while sent < FIFTY_MB:
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
