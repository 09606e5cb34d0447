"""The edge nginx (nginx.conf) in front of the router (deploy/nginx/router.conf) in front of a
live app, as Compose runs them: the path every request takes, the router's fail-over, and what
the router exists for: reloading it to switch the app's upstream set fails no request, POSTs on
the clients' keep-alive connections included."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack.servers import free_port
from tests.integration.conftest import NginxServer, RouterServer, make_dir
from tests.support.live import LiveServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def edge(router: RouterServer, workdir: Path) -> Iterator[NginxServer]:
    # Limits out of the way: the load below comes from one address.
    limits = {"NGINX_API_RATE": "10000r/s", "NGINX_AUTH_RATE": "10000r/s"}
    server = NginxServer(make_dir(workdir, "edge-"), router.address, overrides=limits)
    server.start()
    yield server
    server.stop()


def test_requests_pass_both_with_their_id_and_headers(
    edge: NginxServer, live_app: LiveServer
) -> None:
    response = httpx.get(edge.url + "/api/tags", headers={"X-Request-ID": "through-router-1"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "through-router-1"
    assert response.headers["x-content-type-options"] == "nosniff"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if any("through-router-1" in line for line in live_app.lines):
            break
        time.sleep(0.05)
    [line] = [line for line in live_app.lines if "through-router-1" in line]
    assert '"client_ip":"127.0.0.1"' in line.replace(" ", "")


def test_the_router_fails_over_from_a_container_that_refuses(
    edge: NginxServer, router: RouterServer, live_app: LiveServer
) -> None:
    router.switch([f"127.0.0.1:{free_port()}", f"127.0.0.1:{live_app.port}"])
    try:
        statuses = {httpx.get(edge.url + "/api/tags").status_code for _ in range(6)}
    finally:
        router.switch([f"127.0.0.1:{live_app.port}"])
    assert statuses == {200}


def test_no_container_at_all_gets_the_503_envelope(
    edge: NginxServer, router: RouterServer, live_app: LiveServer
) -> None:
    router.switch([f"127.0.0.1:{free_port()}"])
    try:
        response = httpx.get(edge.url + "/api/tags", headers={"X-Request-ID": "nobody-home"})
    finally:
        router.switch([f"127.0.0.1:{live_app.port}"])
    assert response.status_code == 503
    assert response.json() == {
        "errors": {"body": ["The service is unavailable; retry shortly"]},
        "code": "service_unavailable",
        "request_id": "nobody-home",
    }
    assert response.headers["retry-after"] == "5"


async def _client(edge_url: str, until: float, outcomes: list[str]) -> None:
    # One keep-alive connection per client, as a browser keeps it to the edge.
    async with httpx.AsyncClient(base_url=edge_url, timeout=5) as client:
        while time.monotonic() < until:
            try:
                response = await client.post(
                    "/api/articles", json={"article": {"title": "t", "description": "d"}}
                )
                get = await client.get("/api/tags")
                outcomes += [str(response.status_code), str(get.status_code)]
            except httpx.HTTPError as exc:
                outcomes.append(type(exc).__name__)


def test_switching_the_router_under_keep_alive_load_fails_nothing(
    edge: NginxServer, router: RouterServer, live_app: LiveServer
) -> None:
    """20 reloads while 8 clients POST and GET on their kept-alive connections to the edge."""
    outcomes: list[str] = []
    sets = [[f"127.0.0.1:{live_app.port}"], [f"127.0.0.1:{live_app.port}", router.address]]

    async def scenario() -> int:
        until = time.monotonic() + 4
        clients = [asyncio.create_task(_client(edge.url, until, outcomes)) for _ in range(8)]
        reloads = 0
        while time.monotonic() < until - 0.5:
            await asyncio.to_thread(router.switch, sets[reloads % 2][:1])
            reloads += 1
            await asyncio.sleep(0.15)
        await asyncio.gather(*clients)
        return reloads

    reloads = asyncio.run(scenario())
    router.switch([f"127.0.0.1:{live_app.port}"])
    assert reloads >= 10
    # 401: the app refuses the anonymous POST, as it answers it; never a 5xx, never a closed
    # connection.
    assert len(outcomes) > 100
    assert set(outcomes) == {"401", "200"}, sorted(set(outcomes))
