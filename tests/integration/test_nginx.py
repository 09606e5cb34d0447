"""nginx.conf, run for real: a real Nginx with the project's config in front of a live uvicorn.

Other client addresses are real loopback sources (127.0.0.2...): Linux routes all of 127/8 to
`lo`, so nginx sees a different $remote_addr. The production allow-list for the operator
endpoints names 127.0.0.1 (not 127/8), so 127.0.0.2 is a genuine outsider to it.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.servers import free_port
from tests.integration.conftest import NginxServer, RouterServer, make_dir
from tests.support.live import LiveServer

pytestmark = pytest.mark.slow

OUTSIDER = "127.0.0.2"
HEX32 = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture(scope="module")
def nginx(router: RouterServer, workdir: Path) -> Iterator[NginxServer]:
    """The edge, in front of the router in front of the app: the chain Compose runs. (The edge
    alone before an app would close each connection after one request, which is the router's
    job to avoid: with an app answering 401 before reading a 10 MB body, that one races.)"""
    server = NginxServer(make_dir(workdir, "nginx-"), router.address)
    server.start()
    yield server
    server.stop()


def client_from(address: str, **kwargs: Any) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=30, **kwargs)


def wait_for_line(server: LiveServer | NginxServer, predicate: Any, timeout: float = 10) -> Any:
    """Log lines are read by a thread: give it time to see the line of a finished request."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = server.json_lines() if isinstance(server, LiveServer) else server.access_log()
        found = [line for line in lines if predicate(line)]
        if found:
            return found[-1]
        time.sleep(0.1)
    raise AssertionError("no matching log line")


def app_completed(live_app: LiveServer, request_id: str) -> dict[str, Any]:
    return wait_for_line(  # type: ignore[no-any-return]
        live_app,
        lambda e: e.get("event") == "request_completed" and e.get("request_id") == request_id,
    )


def test_config_passes_nginx_t(nginx: NginxServer) -> None:
    result = nginx.test_config()
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_tls_block_serves_https(live_app: LiveServer, workdir: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    directory = make_dir(workdir, "nginx-tls-")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    key.chmod(0o644)
    tls = {"NGINX_TLS_CERT": str(cert), "NGINX_TLS_KEY": str(key)}
    server = NginxServer(directory, f"127.0.0.1:{live_app.port}", tls=tls)
    assert server.test_config().returncode == 0, server.test_config().stderr
    server.start()
    try:
        response = httpx.get(
            f"https://127.0.0.1:{server.tls_port}/health/liveness", verify=False, timeout=30
        )
        assert response.status_code == 200
        assert response.headers["strict-transport-security"].startswith("max-age=31536000")
        plain = httpx.get(server.url + "/health/liveness", timeout=30)
        assert plain.status_code == 200
    finally:
        server.stop()


def test_client_request_id_passes_through(nginx: NginxServer, live_app: LiveServer) -> None:
    sent = "client-trace.0042_x"
    response = httpx.get(nginx.url + "/api/no-such-route", headers={"X-Request-ID": sent})
    # The app answered (its envelope), with the client's id, once.
    assert response.status_code == 404
    assert response.json()["request_id"] == sent
    assert response.headers.get_list("x-request-id") == [sent]
    assert app_completed(live_app, sent)["status"] == 404
    logged = wait_for_line(nginx, lambda e: e["request_id"] == sent)
    assert logged["status"] == 404
    assert logged["upstream_status"] == "404"


@pytest.mark.parametrize("header", [None, "has spaces and ; semicolons"])
def test_missing_or_malformed_id_gets_nginx_id_kept_by_app(
    nginx: NginxServer, live_app: LiveServer, header: str | None
) -> None:
    headers = {"X-Request-ID": header} if header else {}
    response = httpx.get(nginx.url + "/api/no-such-route", headers=headers)
    request_id = response.headers["x-request-id"]
    assert HEX32.match(request_id), request_id
    assert response.json()["request_id"] == request_id
    assert app_completed(live_app, request_id)["route"] == "unmatched"


def test_client_ip_reaches_app_logs_and_cannot_be_spoofed(
    nginx: NginxServer, live_app: LiveServer
) -> None:
    with client_from(OUTSIDER) as client:
        response = client.get(
            nginx.url + "/api/no-such-route",
            headers={"X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9"},
        )
    line = app_completed(live_app, response.headers["x-request-id"])
    assert line["client_ip"] == OUTSIDER
    access = wait_for_line(nginx, lambda e: e["request_id"] == response.headers["x-request-id"])
    assert access["remote_addr"] == OUTSIDER


def test_body_over_10mb_is_refused_by_nginx(nginx: NginxServer, live_app: LiveServer) -> None:
    body = b"x" * (11 * 1024 * 1024)
    response = httpx.post(
        nginx.url + "/api/users", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    payload = response.json()
    assert payload["code"] == "payload_too_large"
    assert payload["request_id"] == response.headers["x-request-id"]
    access = wait_for_line(nginx, lambda e: e["request_id"] == payload["request_id"])
    assert access["upstream_addr"] == ""  # never reached the app
    assert not [e for e in live_app.json_lines() if e.get("request_id") == payload["request_id"]]


def test_largest_image_upload_fits_through_nginx(nginx: NginxServer) -> None:
    # 10 MiB of image plus multipart framing reaches the app (which wants a token: 401)...
    body = b"x" * (10 * 1024 * 1024 + 16 * 1024)
    headers = {"Content-Type": "multipart/form-data; boundary=b"}
    response = httpx.post(nginx.url + "/api/uploads", content=body, headers=headers, timeout=60)
    assert response.status_code == 401
    # ...11 MB does not.
    body = b"x" * (11 * 1024 * 1024)
    response = httpx.post(nginx.url + "/api/uploads", content=body, headers=headers, timeout=60)
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


def test_login_burst_is_limited_by_the_auth_zone(nginx: NginxServer) -> None:
    with client_from("127.0.0.3") as client:
        responses = [
            client.post(nginx.url + "/api/users/login", json={"user": {}}) for _ in range(12)
        ]
    statuses = [r.status_code for r in responses]
    # 10/minute with a burst of 5: the 7th request inside a minute cannot pass.
    assert statuses[0] != 429
    assert statuses.count(429) >= 5, statuses
    limited = next(r for r in responses if r.status_code == 429)
    assert limited.json()["code"] == "rate_limited"
    assert limited.headers["retry-after"] == "6"
    assert limited.json()["request_id"] == limited.headers["x-request-id"]
    # GET on the same path is not counted by the auth zone (only POST is).
    with client_from("127.0.0.3") as client:
        assert client.get(nginx.url + "/api/users/login").status_code != 429


async def _burst(url: str, source: str, count: int) -> list[int]:
    transport = httpx.AsyncHTTPTransport(local_address=source)
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(transport=transport, limits=limits, timeout=60) as client:
        responses = await asyncio.gather(*(client.get(url) for _ in range(count)))
    return [r.status_code for r in responses]


def test_api_burst_is_limited_but_probes_are_not(nginx: NginxServer) -> None:
    # 200 requests at once against 20 r/s with a burst of 40: most must be refused...
    api = asyncio.run(_burst(nginx.url + "/api/no-such-route", "127.0.0.4", 200))
    assert api.count(429) >= 50, api
    # ...while the same burst on the probes passes untouched (and is not access-logged).
    before = len(nginx.access_log())
    for path in ("/health/liveness", "/health/readiness"):
        probes = asyncio.run(_burst(nginx.url + path, "127.0.0.5", 200))
        assert probes == [200] * 200
    time.sleep(0.5)
    assert not [e for e in nginx.access_log()[before:] if e["uri"].startswith("/health/")]


@pytest.mark.parametrize("path", ["/health/metrics", "/health/detailed"])
def test_operator_endpoints_only_from_internal_networks(nginx: NginxServer, path: str) -> None:
    token = {"Authorization": "Bearer metrics-token-for-nginx-tests"}
    with client_from(OUTSIDER) as outsider:
        refused = outsider.get(nginx.url + path, headers=token)
    assert refused.status_code == 403
    assert refused.json()["code"] == "forbidden"
    # From an internal address nginx passes the request on; the app still wants its token.
    assert httpx.get(nginx.url + path).status_code == 401
    assert httpx.get(nginx.url + path, headers=token).status_code == 200


def test_json_is_gzipped_and_security_headers_appear_once(nginx: NginxServer) -> None:
    response = httpx.get(nginx.url + "/openapi.json", headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert response.json()["info"]["title"]  # httpx decoded the gzip body
    for name, value in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "strict-origin-when-cross-origin"),
    ]:
        assert response.headers.get_list(name) == [value]
    assert "server" not in response.headers or "/" not in response.headers["server"]
    # The image headers are for images only.
    assert "content-security-policy" not in response.headers
    assert "content-disposition" not in response.headers


def test_uploads_are_served_from_disk_with_cache_headers(nginx: NginxServer) -> None:
    content = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
    name = hashlib.sha256(content).hexdigest() + ".png"
    stored = nginx.uploads_root / "uploads" / name
    stored.write_bytes(content)
    stored.chmod(0o644)
    response = httpx.get(nginx.url + "/uploads/" + name)
    assert response.status_code == 200
    assert response.content == content
    assert response.headers["content-type"] == "image/png"
    assert response.headers["cache-control"] == "max-age=31536000"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers.get_list("content-security-policy") == ["default-src 'none'; sandbox"]
    assert response.headers.get_list("content-disposition") == [f'inline; filename="{name}"']
    assert response.headers.get_list("x-frame-options") == ["DENY"]  # the server's, kept
    assert response.headers["x-request-id"]
    assert httpx.post(nginx.url + "/uploads/" + name).status_code == 403
    for bad in ("/uploads/../nginx.conf", "/uploads/evil.svg", "/uploads/" + "a" * 64 + ".html"):
        assert httpx.get(nginx.url + bad).status_code in (400, 404), bad


def test_upstream_down_gets_503_envelope(workdir: Path) -> None:
    server = NginxServer(make_dir(workdir, "nginx-down-"), f"127.0.0.1:{free_port()}")
    server.start()
    try:
        response = httpx.get(server.url + "/api/tags", timeout=30)
    finally:
        server.stop()
    assert response.status_code == 503
    assert response.json()["code"] == "service_unavailable"
    assert response.headers["retry-after"] == "5"


def test_access_log_is_json_with_request_id(nginx: NginxServer) -> None:
    response = httpx.get(nginx.url + "/health", headers={"X-Request-ID": "access-log-check"})
    assert response.status_code == 200
    line = wait_for_line(nginx, lambda e: e["request_id"] == "access-log-check")
    assert line["method"] == "GET"
    assert line["uri"] == "/health"
    assert line["status"] == 200
    assert isinstance(line["request_time"], float | int)
