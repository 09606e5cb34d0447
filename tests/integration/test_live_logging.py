"""The log stream of a real `uvicorn app.main:app` process: JSON lines only, one
`request_completed` per request with its fields, probes below INFO, no secrets."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.live import LiveServer

pytestmark = pytest.mark.slow

SECRET_TOKEN = "Token live-logging-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def server(base_env: dict[str, str]) -> Iterator[LiveServer]:
    live = LiveServer({**base_env, "LOG_LEVEL": "INFO", "SHUTDOWN_DRAIN_SECONDS": "0"}).start()
    try:
        yield live
    finally:
        live.stop()


def completed(server: LiveServer, request_id: str) -> list[dict[str, Any]]:
    return [
        line
        for line in server.json_lines()
        if line.get("event") == "request_completed" and line.get("request_id") == request_id
    ]


def wait_for_line(server: LiveServer, request_id: str) -> None:
    server.wait_for_line(
        lambda line: (
            line.get("event") == "request_completed" and line.get("request_id") == request_id
        )
    )


REQUESTS = [
    ("GET", "/api/tags", "/api/tags", 200),
    ("GET", "/api/profiles/nobody-here", "/api/profiles/{username}", 401),
    ("GET", "/no/such/page", "unmatched", 404),
    ("DELETE", "/api/tags", "unmatched", 405),
    ("GET", "/api/user", "/api/user", 401),
]


@pytest.mark.parametrize(("method", "path", "route", "status"), REQUESTS)
def test_one_request_completed_line_per_request(
    server: LiveServer, method: str, path: str, route: str, status: int
) -> None:
    request_id = "live-" + uuid.uuid4().hex
    headers = {"X-Request-ID": request_id, "Authorization": SECRET_TOKEN}
    response = httpx.request(method, server.url + path, headers=headers, timeout=10)
    assert response.status_code == status
    wait_for_line(server, request_id)
    lines = completed(server, request_id)
    assert len(lines) == 1, lines
    line = lines[0]
    assert line["method"] == method
    assert line["path"] == path
    assert line["status"] == status
    if status != 405:  # a 405 has matched no route; its label is the shared one either way
        assert line["route"] == route
    assert isinstance(line["duration_ms"], int | float)
    assert line["duration_ms"] >= 0
    assert line["client_ip"] == "127.0.0.1"
    assert line["level"] == "info"
    assert "timestamp" in line


def test_every_line_of_a_request_carries_its_id(server: LiveServer) -> None:
    request_id = "live-" + uuid.uuid4().hex
    httpx.get(server.url + "/api/user", headers={"X-Request-ID": request_id, "Authorization": "x"})
    wait_for_line(server, request_id)
    ours = [line for line in server.json_lines() if line.get("request_id") == request_id]
    assert ours
    assert ours[-1]["event"] == "request_completed"


def test_health_probes_are_not_logged_at_info(server: LiveServer) -> None:
    ids = []
    for path in ("/health", "/health/liveness", "/health/readiness"):
        request_id = "probe-" + uuid.uuid4().hex
        ids.append(request_id)
        assert httpx.get(server.url + path, headers={"X-Request-ID": request_id}).status_code == 200
    marker = "marker-" + uuid.uuid4().hex
    httpx.get(server.url + "/api/tags", headers={"X-Request-ID": marker})
    wait_for_line(server, marker)  # logged after the probes, so they had their chance
    for request_id in ids:
        assert completed(server, request_id) == []


def _get_with_header(server: LiveServer, size: int) -> httpx.Response | None:
    try:
        return httpx.get(server.url + "/api/tags", headers={"X-Padding": "a" * size}, timeout=10)
    except httpx.RemoteProtocolError:
        return None  # the server refused to read it: not a 5xx either


@pytest.mark.parametrize("size", [64 * 1024, 1024 * 1024])
def test_huge_header_is_not_a_server_error(server: LiveServer, size: int) -> None:
    # uvicorn's parsers (httptools, h11 when the whole head arrives at once) accept even 1 MB:
    # the app must answer normally; Nginx bounds header size in front of it.
    response = _get_with_header(server, size)
    assert response is None or response.status_code < 500
    assert httpx.get(server.url + "/health/liveness").status_code == 200


def test_every_line_is_json_and_secrets_never_appear(base_env: dict[str, str]) -> None:
    """A whole process lifetime, start-up and shutdown lines included."""
    live = LiveServer({**base_env, "LOG_LEVEL": "DEBUG", "SHUTDOWN_DRAIN_SECONDS": "0"}).start()
    try:
        httpx.get(live.url + "/api/user", headers={"Authorization": SECRET_TOKEN})
        httpx.post(
            live.url + "/api/users/login",
            json={"user": {"email": "a@b.example", "password": "hunter2-" + SECRET_TOKEN}},
        )
        httpx.get(live.url + "/health/readiness")
    finally:
        live.stop()
    assert len(live.lines) > 5
    records = live.json_lines()  # raises on any line that is not JSON
    assert all(isinstance(r, dict) for r in records)
    events = [r.get("event", "") for r in records]
    assert any("Started server process" in e for e in events)
    assert any("Finished server process" in e for e in events)
    assert "request_completed" in events
    text = "\n".join(live.lines)
    assert SECRET_TOKEN not in text
    assert SECRET_TOKEN.split()[1] not in text
