"""The metrics the SLOs and alerts read (deploy/prometheus/rules): latency by status with a
bucket at the SLO threshold, cache results, rate-limit decisions, readiness and memory gauges.
Each is read from a real scrape after real requests against Postgres and Redis."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI
from httpx import AsyncClient

from app.core.config import Settings
from app.observability.metrics import LATENCY_SLO_SECONDS
from devstack.servers import RedisServer, free_port
from tests.api.conftest import LIMITS
from tests.api.helpers import create_article, register
from tests.api.test_health import samples, value
from tests.api.test_rate_limit import burst, client_for
from tests.support.apps import serve

SettingsFactory = Callable[..., Settings]


async def _scrape(http: AsyncClient) -> str:
    response = await http.get("/health/metrics")
    assert response.status_code == 200
    return response.text


def _delta(before: str, after: str, metric: str, **labels: str) -> float:
    return value(after, metric, **labels) - value(before, metric, **labels)


async def test_latency_is_labelled_by_status_with_a_bucket_at_the_slo(client: AsyncClient) -> None:
    before = await _scrape(client)
    await client.get("/api/profiles/nobody-here")
    await client.get("/api/tags")
    after = await _scrape(client)
    count = "http_request_duration_seconds_count"
    assert _delta(before, after, count, route="/api/profiles/{username}", status="404") == 1
    assert _delta(before, after, count, route="/api/tags", status="200") == 1
    for sample in samples(after):
        if sample.name.startswith("http_request_duration_seconds"):
            assert {"method", "route", "status"} <= set(sample.labels), sample
    bounds = {
        s.labels["le"] for s in samples(after) if s.name == "http_request_duration_seconds_bucket"
    }
    assert str(LATENCY_SLO_SECONDS) in bounds, "the latency SLI reads this bucket"


async def test_cache_reads_are_counted_as_hits_and_misses(client: AsyncClient) -> None:
    user = await register(client, "cachecount")
    await create_article(client, user["token"], tagList=["counted"])
    before = await _scrape(client)
    for _ in range(2):
        await client.get("/api/tags")  # a miss that fills the cache, then a hit
        await client.get("/api/profiles/cachecount")
    after = await _scrape(client)
    name = "cache_requests_total"
    for cache in ("tags", "profile"):
        assert _delta(before, after, name, cache=cache, result="miss") == 1, cache
        assert _delta(before, after, name, cache=cache, result="hit") == 1, cache
        assert _delta(before, after, name, cache=cache, result="error") == 0, cache


async def test_cache_errors_are_counted_while_redis_is_down(
    settings_factory: SettingsFactory, tmp_path: Path
) -> None:
    redis = RedisServer(free_port(), tmp_path / "redis")
    redis.start()
    try:
        async with serve(settings_factory(REDIS_URL=redis.url, RATE_LIMIT_ENABLED=False)) as http:
            assert (await http.get("/api/tags")).status_code == 200
            redis.stop()
            before = await _scrape(http)
            for _ in range(3):
                assert (await http.get("/api/tags")).status_code == 200, "served from Postgres"
            after = await _scrape(http)
            errors = _delta(before, after, "cache_requests_total", cache="tags", result="error")
            assert errors == 3
            assert value(after, "app_dependency_up", dependency="redis") == 0
            assert value(after, "app_dependency_up", dependency="database") == 1
            assert value(after, "app_ready") == 1, "Redis is optional here: still ready"
    finally:
        redis.stop()


async def test_rate_limit_decisions_by_rule_and_outcome(limited_app: FastAPI) -> None:
    async with client_for(limited_app) as http:
        before = await _scrape(http)
        await burst(http, 7)  # the default rule allows 5 a minute
        await http.post("/api/users/login", json={})  # login, write, default: default refuses
        after = await _scrape(http)
    name = "rate_limit_decisions_total"
    # The scrape is not under the API prefix, so it is never counted.
    assert _delta(before, after, name, rule="default", outcome="allowed") == 5
    assert _delta(before, after, name, rule="default", outcome="limited") == 3
    assert _delta(before, after, name, rule="login", outcome="allowed") == 1
    assert _delta(before, after, name, rule="write", outcome="allowed") == 1
    assert _delta(before, after, name, rule="login", outcome="limited") == 0


async def test_rate_limit_decisions_are_counted_in_memory_too(
    settings_factory: SettingsFactory,
) -> None:
    """Redis unreachable from the start: the in-process limiter decides, and is counted. An
    hourly limit: a burst across a minute boundary could otherwise fit in two windows."""
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    limits = {**LIMITS, "RATE_LIMIT_DEFAULT": "5/hour"}
    async with serve(settings_factory(REDIS_URL=dead_redis, **limits)) as http:
        responses = await burst(http, 6)
        after = await _scrape(http)
    refused = sum(r.status_code == 429 for r in responses)
    name = "rate_limit_decisions_total"
    assert refused >= 1
    assert value(after, name, rule="default", outcome="allowed") == 6 - refused
    assert value(after, name, rule="default", outcome="limited") == refused


async def test_readiness_pool_and_memory_gauges(client: AsyncClient, app: FastAPI) -> None:
    exposition = await _scrape(client)
    settings = app.state.resources.settings
    assert value(exposition, "app_ready") == 1
    assert value(exposition, "app_dependency_up", dependency="database") == 1
    assert value(exposition, "app_dependency_up", dependency="redis") == 1
    assert value(exposition, "db_pool_max_connections") == (
        settings.DB_POOL_SIZE + settings.DB_MAX_OVERFLOW
    )
    rss = value(exposition, "app_process_resident_memory_bytes")
    limit = value(exposition, "app_memory_limit_bytes")
    assert 10_000_000 < rss < limit

    app.state.resources.draining = True
    try:
        assert value(await _scrape(client), "app_ready") == 0, "draining is not ready"
    finally:
        app.state.resources.draining = False


async def test_without_redis_only_the_database_is_reported(
    settings_factory: SettingsFactory,
) -> None:
    async with serve(settings_factory(REDIS_URL=None)) as http:
        exposition = await _scrape(http)
    dependencies = {
        s.labels["dependency"] for s in samples(exposition) if s.name == "app_dependency_up"
    }
    assert dependencies == {"database"}
