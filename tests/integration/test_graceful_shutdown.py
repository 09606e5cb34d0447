"""SIGTERM to a real `uvicorn app.main:app` (one worker, and the multi-worker supervisor) while
20 clients are still sending their upload bodies: every upload completes, readiness fails at once
and the process exits well within the budget."""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from devstack.servers import PostgresServer
from tests.support.databases import fresh_database
from tests.support.live import LiveServer

pytestmark = pytest.mark.slow

DRAIN_SECONDS = 2.0
SLOW_REQUESTS = 20
BODY_PIECES = 10
PIECE_INTERVAL = 0.5  # each body takes ~5 s: it outlives the drain period


@pytest.fixture(scope="module")
def live_database(postgres: PostgresServer) -> str:
    """A database of its own: the live servers commit for real."""
    return fresh_database(postgres)


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16 + seed, 9), (seed * 10 % 256, 80, 160)).save(buffer, format="PNG")
    return buffer.getvalue()


def multipart(data: bytes, boundary: str) -> bytes:
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode()


async def slow_body(body: bytes, started: asyncio.Event) -> AsyncIterator[bytes]:
    piece = -(-len(body) // BODY_PIECES)
    for index in range(0, len(body), piece):
        yield body[index : index + piece]
        started.set()
        await asyncio.sleep(PIECE_INTERVAL)


async def slow_upload(http: httpx.AsyncClient, token: str, data: bytes) -> httpx.Response:
    boundary = uuid.uuid4().hex
    body = multipart(data, boundary)
    started = asyncio.Event()
    request = http.post(
        "/api/uploads",
        content=slow_body(body, started),
        headers={
            "Authorization": f"Token {token}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(len(body)),
        },
    )
    return await request


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_drains_then_finishes_in_flight_requests(
    base_env: dict[str, str], live_database: str, tmp_path: Path, workers: int
) -> None:
    env = {
        **base_env,
        "DATABASE_URL": live_database,
        "UPLOAD_DIR": str(tmp_path),
        "SHUTDOWN_DRAIN_SECONDS": str(DRAIN_SECONDS),
        "SHUTDOWN_GRACE_SECONDS": "20",
    }
    server = LiveServer(env, workers=workers).start(timeout=60)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            name = f"lameduck{uuid.uuid4().hex[:8]}"
            user = {"username": name, "email": f"{name}@example.com", "password": "x" * 12}
            registered = await http.post("/api/users", json={"user": user})
            assert registered.status_code == 201, registered.text
            token = registered.json()["user"]["token"]

            images = [png(n) for n in range(SLOW_REQUESTS)]
            uploads = [asyncio.create_task(slow_upload(http, token, data)) for data in images]
            await asyncio.sleep(1.0)  # every client is mid-body now

            server.signal()
            signalled = time.monotonic()
            readiness, liveness = await probe_during_drain(server.url, signalled)

            responses = await asyncio.gather(*uploads)
        assert [r.status_code for r in responses] == [201] * SLOW_REQUESTS
        for response, data in zip(responses, images, strict=True):
            stored = tmp_path / response.json()["url"].rsplit("/", 1)[1]
            assert stored.read_bytes() == data
        # Readiness failed at once (the supervisor forwards SIGTERM within its 0.5 s poll) while
        # the server kept accepting new connections.
        settled = [status for offset, status in readiness if workers == 1 or offset > 0.7]
        assert len(settled) >= 5
        assert all(status == 503 for status in settled), readiness
        assert liveness
        assert all(status == 200 for status in liveness)

        exit_code = await asyncio.to_thread(server.process.wait, 40)  # type: ignore[union-attr]
        elapsed = time.monotonic() - signalled
        assert elapsed < 40
    finally:
        server.stop()
    events = [line.get("event") for line in log_records(server)]
    assert events.count("shutdown_draining") == workers
    assert events.count("app_stopped") == workers
    assert not [line for line in server.lines if "Cancel" in line or "Traceback" in line]
    assert exit_code in (0, -15)


def log_records(server: LiveServer) -> list[dict[str, object]]:
    """The workers' JSON lines (the multi-worker supervisor writes plain uvicorn lines)."""
    records = []
    for line in server.lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


async def probe_during_drain(
    url: str, signalled: float
) -> tuple[list[tuple[float, int]], list[int]]:
    """Fresh connections (no keep-alive) during the drain: the server must still accept them."""
    readiness: list[tuple[float, int]] = []
    liveness: list[int] = []
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=5, limits=limits) as probe:
        while time.monotonic() - signalled < DRAIN_SECONDS - 0.5:
            status = (await probe.get("/health/readiness")).status_code
            readiness.append((time.monotonic() - signalled, status))
            liveness.append((await probe.get("/health/liveness")).status_code)
            await asyncio.sleep(0.1)
    return readiness, liveness
