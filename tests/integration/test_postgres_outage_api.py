"""Postgres stopped under a live API (its own server, not the session's): requests answer 503
with Retry-After quickly, readiness fails, liveness stays up; Postgres back: the same process
serves again within 10 s."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from redis import Redis

from app.core.config import Settings
from app.main import create_app
from devstack.servers import PostgresServer, free_port
from tests.integration.conftest import OUTAGE_DATABASE
from tests.support.live import LiveServer, timed_get

pytestmark = pytest.mark.slow


def test_api_answers_503_fast_while_postgres_is_down_and_recovers(
    base_env: dict[str, str], dedicated_postgres: PostgresServer
) -> None:
    env = {
        **base_env,
        "DATABASE_URL": dedicated_postgres.url(OUTAGE_DATABASE),
        "BREAKER_RESET_SECONDS": "1",
    }
    Redis.from_url(base_env["REDIS_URL"]).flushdb()  # no cached page from other tests' data
    with LiveServer(env) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        name = f"outage{free_port()}"
        user = {"username": name, "email": f"{name}@example.com", "password": "x" * 12}
        assert http.post("/api/users", json={"user": user}).status_code == 201
        served = http.get(f"/api/articles?author={name}")  # now cached for anonymous readers
        assert served.status_code == 200
        assert http.get(f"/api/profiles/{name}").status_code == 200

        dedicated_postgres.stop("fast")

        # What the cache holds is still served; whatever needs Postgres gets a fast 503.
        still = http.get(f"/api/articles?author={name}")
        assert (still.status_code, still.content) == (200, served.content)
        uncached = [
            "/api/articles?offset=1",
            f"/api/profiles/{name}x",
            "/api/articles?tag=dragons",
            "/api/tags",  # never asked for, so not cached; answered outside FastAPI's handler
        ]
        for path in uncached * 4:
            response, elapsed = timed_get(http, path)
            assert response.status_code == 503, (path, response.text)
            assert elapsed < 2.0, (path, elapsed)
            assert int(response.headers["retry-after"]) > 0
            assert response.json()["code"] == "database_unavailable"

        readiness, elapsed = timed_get(http, "/health/readiness")
        assert readiness.status_code == 503
        assert elapsed < 2.0
        assert readiness.json()["checks"]["database"]["status"] == "down"
        assert http.get("/health/liveness").status_code == 200

        dedicated_postgres.start()
        restarted = time.monotonic()
        while True:
            response = http.get("/api/articles?offset=2")  # never cached: it needs Postgres
            if response.status_code == 200:
                break
            assert response.status_code == 503
            assert time.monotonic() - restarted < 10, "API did not recover within 10 s"
            time.sleep(0.2)
        assert http.get(f"/api/profiles/{name}").status_code == 200
        assert http.get("/health/readiness").status_code == 200
        assert server.process is not None
        assert server.process.poll() is None  # the same process, no restart


@pytest.fixture
def hung_postgres() -> Iterator[str]:
    """A port whose listener completes TCP handshakes and never answers: a hung database."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        port = listener.getsockname()[1]
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/conduit"


async def test_database_breaker_stops_paying_for_a_hung_database(
    settings_factory: Callable[..., Settings], hung_postgres: str
) -> None:
    settings = settings_factory(
        DATABASE_URL=hung_postgres,
        REDIS_URL=None,  # every read must reach the database: nothing answered from a cache
        DB_STARTUP_TIMEOUT=0,
        DB_CONNECT_TIMEOUT=1,
        BREAKER_FAILURE_THRESHOLD=2,
        BREAKER_RESET_SECONDS=30,
    )
    application = create_app(settings)
    transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
    async with (
        LifespanManager(application),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as http,
    ):
        for _ in range(2):  # each one waits out the connect timeout, then the breaker opens
            response = await http.get("/api/articles")
            assert response.status_code == 503
        assert application.state.resources.breakers["database"].state == "open"
        for _ in range(20):
            started = time.monotonic()
            response = await http.get("/api/articles")
            assert response.status_code == 503
            assert response.headers["retry-after"]
            assert response.json()["code"] == "database_unavailable"
            assert time.monotonic() - started < 0.5
        detailed = (await http.get("/health/detailed")).json()
        assert detailed["circuit_breakers"]["database"] == "open"
