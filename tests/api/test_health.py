"""Health endpoints and the Prometheus exposition, against real Postgres and Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from app.core.config import Settings
from app.services.storage import DiskImageStorage
from devstack.servers import RedisServer, free_port
from tests.support.apps import serve

SettingsFactory = Callable[..., Settings]
METRICS_TOKEN = "metrics-token-for-tests-0123456789"


def samples(exposition: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(exposition) for s in family.samples]


def value(exposition: str, metric: str, **labels: str) -> float:
    """Sum of the samples called `metric` whose labels include `labels` (0 when none)."""
    return sum(
        s.value
        for s in samples(exposition)
        if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items())
    )


def _checkouts(app: FastAPI) -> float:
    counter = app.state.metrics.db_checkouts
    return float(counter._value.get())


# --- probes against the healthy stack -----------------------------------------------------


async def test_health(client: AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["version"]


async def test_probes_do_no_dependency_io(client: AsyncClient, app: FastAPI) -> None:
    before = _checkouts(app)
    for path in ("/health", "/health/liveness"):
        for _ in range(3):
            assert (await client.get(path)).status_code == 200
    assert _checkouts(app) == before, "liveness must not touch the database"
    await client.get("/health/readiness")
    assert _checkouts(app) > before, "the counter moves when the database is used"


async def test_liveness_and_health_with_every_dependency_dead(
    settings_factory: SettingsFactory,
) -> None:
    dead = settings_factory(
        DATABASE_URL=f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/none",
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        DB_STARTUP_TIMEOUT=0,
        DB_CONNECT_TIMEOUT=0.5,
    )
    async with serve(dead) as http:
        for path in ("/health", "/health/liveness"):
            response = await http.get(path)
            assert response.status_code == 200
            assert response.json()["status"] == "ok"
        started = time.monotonic()
        response = await http.get("/health/readiness")
        assert time.monotonic() - started < 2
        assert response.status_code == 503
        body = response.json()
        assert body["code"] == "not_ready"
        assert body["checks"]["database"]["status"] == "down"
        assert body["errors"]["body"] == ["database is unavailable"]
        assert response.headers["retry-after"].isdigit()


async def test_readiness(client: AsyncClient) -> None:
    response = await client.get("/health/readiness")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["database"]["latency_ms"] >= 0
    assert body["checks"]["redis"]["status"] == "ok"


async def test_detailed(client: AsyncClient) -> None:
    response = await client.get("/health/detailed")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["environment"] == "test"
    assert body["version"]
    assert body["uptime_seconds"] >= 0
    database = body["checks"]["database"]
    assert database["status"] == "ok"
    pool = database["pool"]
    assert set(pool) >= {"size", "checked_out", "overflow", "idle"}
    assert all(isinstance(v, int) and v >= 0 for v in pool.values())
    assert pool["checked_out"] >= 1  # the test's own connection
    redis = body["checks"]["redis"]
    assert redis["status"] == "ok"
    assert redis["latency_ms"] >= 0
    assert body["circuit_breakers"]["redis"] == "closed"
    assert set(body["circuit_breakers"].values()) == {"closed"}
    system = body["system"]
    for key in ("cpu_percent", "memory_percent", "process_rss_bytes"):
        assert isinstance(system[key], int | float), key
    assert system["process_rss_bytes"] > 1_000_000


async def test_redis_disabled_without_url(settings_factory: SettingsFactory) -> None:
    async with serve(settings_factory(REDIS_URL=None)) as http:
        body = (await http.get("/health/detailed")).json()
        assert body["checks"]["redis"] == {"status": "disabled", "latency_ms": None}
        assert body["status"] == "ok"
        readiness = await http.get("/health/readiness")
        assert readiness.status_code == 200
        assert readiness.json()["checks"]["redis"]["status"] == "disabled"


# --- Redis down ---------------------------------------------------------------------------


async def test_redis_down_degrades(settings_factory: SettingsFactory, tmp_path: Path) -> None:
    redis = RedisServer(free_port(), tmp_path / "redis")
    redis.start()
    try:
        optional = settings_factory(REDIS_URL=redis.url, BREAKER_FAILURE_THRESHOLD=2)
        required = settings_factory(REDIS_URL=redis.url, REDIS_REQUIRED=True)
        async with serve(optional) as http, serve(required) as http_required:
            assert (await http.get("/health/detailed")).json()["status"] == "ok"
            assert (await http_required.get("/health/readiness")).status_code == 200
            redis.stop()

            started = time.monotonic()
            body = (await http.get("/health/detailed")).json()
            assert time.monotonic() - started < 2
            assert body["status"] == "degraded"
            assert body["checks"]["redis"]["status"] == "down"
            assert body["checks"]["database"]["status"] == "ok"
            readiness = await http.get("/health/readiness")
            assert readiness.status_code == 200, "optional Redis down only degrades"
            assert readiness.json()["checks"]["redis"]["status"] == "down"
            assert (await http.get("/api/tags")).status_code == 200, "serves without Redis"

            # The breaker opened after two failures and is shown to operators.
            await http.get("/health/detailed")
            detailed = (await http.get("/health/detailed")).json()
            assert detailed["circuit_breakers"]["redis"] in ("open", "half-open")
            metrics = (await http.get("/health/metrics")).text
            assert value(metrics, "circuit_breaker_state", name="redis") >= 1

            not_ready = await http_required.get("/health/readiness")
            assert not_ready.status_code == 503
            assert not_ready.json()["errors"]["body"] == ["redis is unavailable"]
            assert not_ready.json()["checks"]["redis"]["status"] == "down"
            assert (await http_required.get("/health/detailed")).json()["status"] == "down"
    finally:
        redis.stop()


# --- operator endpoints behind METRICS_TOKEN ----------------------------------------------


@pytest.mark.parametrize("path", ["/health/detailed", "/health/metrics"])
async def test_metrics_token(settings_factory: SettingsFactory, path: str) -> None:
    async with serve(settings_factory(METRICS_TOKEN=METRICS_TOKEN)) as http:
        refused: list[dict[str, str]] = [
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Token {METRICS_TOKEN}"},
            {"Authorization": METRICS_TOKEN},
            {"Authorization": f"Bearer {METRICS_TOKEN}x"},
            {"Authorization": "Bearer "},
        ]
        for headers in refused:
            response = await http.get(path, headers=headers)
            assert response.status_code == 401, headers
            body = response.json()
            assert body["code"] == "metrics_token_required"
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert body["request_id"] == response.headers["x-request-id"]
            assert METRICS_TOKEN not in response.text
        ok = await http.get(path, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert ok.status_code == 200
        # Probes stay open: balancers and kubelets carry no token.
        for probe in ("/health", "/health/liveness", "/health/readiness"):
            assert (await http.get(probe)).status_code == 200


# --- metrics ------------------------------------------------------------------------------


async def _scrape(http: AsyncClient) -> str:
    response = await http.get("/health/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def test_request_counter_uses_route_templates(client: AsyncClient) -> None:
    before = await _scrape(client)
    for name in ("alice", "bob", "carol"):
        await client.get(f"/api/profiles/{name}")
    for n in range(4):
        await client.get(f"/no/such/page/{n}")
    await client.delete("/api/tags")
    await client.get("/openapi.json")  # a plain Starlette route: no route object in the scope
    after = await _scrape(client)

    def delta(**labels: str) -> float:
        name = "http_requests_total"
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta(method="GET", route="/api/profiles/{username}", status="404") == 3
    assert delta(method="GET", route="unmatched", status="404") == 4
    assert delta(method="DELETE", status="405") == 1
    assert delta(method="GET", route="/openapi.json", status="200") == 1
    routes = {s.labels.get("route") for s in samples(after) if s.name == "http_requests_total"}
    assert not any(r and ("alice" in r or "/no/such" in r) for r in routes), routes
    for sample in samples(after):
        if sample.name == "http_requests_total":
            assert set(sample.labels) == {"method", "route", "status"}


async def test_latency_histogram_and_in_flight(client: AsyncClient) -> None:
    before = await _scrape(client)
    for _ in range(2):
        await client.get("/api/tags")
    after = await _scrape(client)
    name = "http_request_duration_seconds_count"
    labels = {"method": "GET", "route": "/api/tags"}
    assert value(after, name, **labels) - value(before, name, **labels) == 2
    buckets = [
        s
        for s in samples(after)
        if s.name == "http_request_duration_seconds_bucket" and s.labels.get("route") == "/api/tags"
    ]
    assert len(buckets) > 5
    assert {s.labels["le"] for s in buckets} >= {"0.005", "0.1", "1.0", "+Inf"}
    assert value(after, "http_requests_in_flight") >= 1  # the scrape itself


async def test_pool_and_breaker_gauges(client: AsyncClient) -> None:
    exposition = await _scrape(client)
    states = {
        s.labels["state"]: s.value for s in samples(exposition) if s.name == "db_pool_connections"
    }
    assert set(states) >= {"size", "checked_out", "idle", "overflow"}
    assert states["checked_out"] >= 1
    assert value(exposition, "circuit_breaker_state", name="redis") == 0
    assert value(exposition, "db_connections_opened_total") >= 1
    assert any(s.name.startswith("process_") for s in samples(exposition))


async def test_in_flight_returns_to_idle(settings_factory: SettingsFactory) -> None:
    """After overlapping requests, only the scrape itself is in flight."""
    async with serve(settings_factory()) as http:
        results = await asyncio.gather(*(http.get("/health/readiness") for _ in range(5)))
        assert all(r.status_code == 200 for r in results)
        idle = await _scrape(http)
        assert value(idle, "http_requests_in_flight") == 1


async def test_health_is_documented_as_health_status(client: AsyncClient) -> None:
    """/health skips FastAPI's per-request handler but keeps its OpenAPI entry."""
    spec = (await client.get("/openapi.json")).json()
    ok = spec["paths"]["/health"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"]["$ref"].endswith("/HealthStatus")
    response = await client.get("/health")
    assert response.status_code == 200
    assert set(response.json()) == {"status", "service", "version"}


# --- image storage (local disk; the S3 store is in test_uploads_s3.py) --------------------


async def test_detailed_reports_local_storage(
    client: AsyncClient, app: FastAPI, tmp_path: Path
) -> None:
    resources = app.state.resources
    original = resources.image_storage
    try:
        resources.image_storage = DiskImageStorage(tmp_path / "uploads")
        body = (await client.get("/health/detailed")).json()
        storage = body["checks"]["storage"]
        assert storage["status"] == "ok"
        assert storage["backend"] == "local"
        assert storage["directory"] == str((tmp_path / "uploads").resolve())
        assert storage["writable"] is True
        assert storage["free_bytes"] > 0
        assert "breaker" not in storage
        assert "storage" not in body["circuit_breakers"], "a local disk gets no breaker"

        # A path that cannot be a directory (even for root, unlike a permission bit).
        (tmp_path / "a-file").write_bytes(b"")
        resources.image_storage = DiskImageStorage(tmp_path / "a-file")
        body = (await client.get("/health/detailed")).json()
        assert body["status"] == "degraded"
        assert body["checks"]["storage"]["status"] == "down"
        assert "is not writable" in body["checks"]["storage"]["error"]
        readiness = await client.get("/health/readiness")
        assert readiness.status_code == 200, "uploads failing never takes the API out"
    finally:
        resources.image_storage = original
