"""Postgres stopped under a running app (its own server, not the session's): readiness 503
within 2 s naming the database, liveness 200, a request needing the database 503 with
Retry-After within 2 s; Postgres back: readiness 200 within 10 s, same process."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from app.core.config import Settings
from devstack.servers import PostgresServer
from tests.integration.conftest import OUTAGE_DATABASE
from tests.support.apps import serve
from tests.support.live import LiveServer, timed_get

pytestmark = pytest.mark.slow


def pid(http: httpx.Client) -> int:
    return int(http.get("/health/detailed").json()["system"]["pid"])


def test_database_outage_and_recovery(
    base_env: dict[str, str], dedicated_postgres: PostgresServer
) -> None:
    env = {
        **base_env,
        "DATABASE_URL": dedicated_postgres.url(OUTAGE_DATABASE),
        "REDIS_URL": "",  # no cache in front of the database: every read needs Postgres
        "DB_POOL_TIMEOUT": "1",
        "DB_CONNECT_TIMEOUT": "1",
        "BREAKER_RESET_SECONDS": "1",
        "SHUTDOWN_DRAIN_SECONDS": "0",
    }
    with LiveServer(env) as server, httpx.Client(base_url=server.url, timeout=15) as http:
        assert http.get("/health/readiness").status_code == 200
        assert http.get("/api/tags").status_code == 200
        serving_pid = pid(http)

        dedicated_postgres.stop("immediate")

        for _ in range(3):
            readiness, elapsed = timed_get(http, "/health/readiness")
            assert readiness.status_code == 503, readiness.text
            assert elapsed < 2.0, elapsed
            body = readiness.json()
            assert body["code"] == "not_ready"
            assert body["errors"]["body"] == ["database is unavailable"]
            assert body["request_id"] == readiness.headers["x-request-id"]
            assert body["checks"]["database"]["status"] == "down"
            assert int(readiness.headers["retry-after"]) > 0

            liveness, elapsed = timed_get(http, "/health/liveness")
            assert liveness.status_code == 200
            assert elapsed < 2.0

            tags, elapsed = timed_get(http, "/api/tags")
            assert tags.status_code == 503, tags.text
            assert elapsed < 2.0, elapsed
            assert int(tags.headers["retry-after"]) > 0
            assert tags.json()["code"] == "database_unavailable"
            assert tags.json()["request_id"] == tags.headers["x-request-id"]

        detailed = http.get("/health/detailed").json()
        assert detailed["status"] == "down"
        assert detailed["checks"]["database"]["status"] == "down"

        dedicated_postgres.start()
        deadline = time.monotonic() + 10
        while http.get("/health/readiness").status_code != 200:
            assert time.monotonic() < deadline, "readiness did not recover within 10 s"
            time.sleep(0.2)
        deadline = time.monotonic() + 10
        while http.get("/api/tags").status_code != 200:
            assert time.monotonic() < deadline, "requests did not recover within 10 s"
            time.sleep(0.2)
        assert pid(http) == serving_pid, "recovered without a restart"
        assert server.process is not None
        assert server.process.poll() is None

    # The stale pooled connections were found dead (pre-ping) and replaced, and logged as such.
    server.wait_for_line(lambda line: line.get("event") == "db_connection_invalidated")


async def test_dry_pool_answers_503_instead_of_hanging(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(
        REDIS_URL=None, DB_POOL_SIZE=1, DB_MAX_OVERFLOW=0, DB_POOL_TIMEOUT=0.5
    )
    async with serve(settings) as http:
        assert (await http.get("/api/tags")).status_code == 200
        engine = http.app.state.resources.engine  # type: ignore[attr-defined]
        async with engine.connect():  # holds the pool's only connection
            started = time.monotonic()
            response = await http.get("/api/tags")
            elapsed = time.monotonic() - started
            assert response.status_code == 503, response.text
            assert elapsed < 2.0
            assert int(response.headers["retry-after"]) > 0
            assert response.json()["code"] == "database_unavailable"
            assert (await http.get("/health/liveness")).status_code == 200
            for _ in range(settings.BREAKER_FAILURE_THRESHOLD):
                assert (await http.get("/api/tags")).status_code == 503
        # A busy pool is not a dead database: the breaker stayed closed, so the very next
        # request is served instead of being shed for BREAKER_RESET_SECONDS.
        breaker = http.app.state.resources.breakers["database"]  # type: ignore[attr-defined]
        assert breaker.state.value == "closed"
        assert (await http.get("/api/tags")).status_code == 200
