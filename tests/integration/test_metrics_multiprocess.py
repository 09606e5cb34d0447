"""Two uvicorn workers share one Prometheus view: a request is counted once, whichever worker
served it and whichever worker answers the scrape."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.live import LiveServer

pytestmark = pytest.mark.slow

REQUESTS = 30
SCRAPES = 8


def counter(exposition: str, **labels: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "http_requests_total"
        and all(sample.labels.get(k) == v for k, v in labels.items())
    )


@pytest.fixture(scope="module")
def server(
    base_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    multiproc_dir = tmp_path_factory.mktemp("prometheus-multiproc")
    assert not any(Path(multiproc_dir).iterdir())
    env = {
        **base_env,
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir),
        "WEB_CONCURRENCY": "2",
        "SHUTDOWN_DRAIN_SECONDS": "0",
    }
    live = LiveServer(
        env, workers=2, extra_args=["--log-config", "deploy/uvicorn-log-config.json"]
    ).start()
    try:
        yield live
    finally:
        live.stop()


def _pids_serving(server: LiveServer) -> set[int]:
    pids = set()
    for _ in range(40):
        # A fresh connection each time, so the kernel spreads them over both workers.
        with httpx.Client(base_url=server.url, timeout=10) as http:
            pids.add(int(http.get("/health/detailed").json()["system"]["pid"]))
    return pids


def test_both_workers_serve(server: LiveServer) -> None:
    assert len(_pids_serving(server)) == 2


def test_requests_counted_once_across_workers(server: LiveServer) -> None:
    labels = {"method": "GET", "route": "/api/profiles/{username}", "status": "404"}
    for n in range(REQUESTS):
        with httpx.Client(base_url=server.url, timeout=10) as http:
            assert http.get(f"/api/profiles/nobody-{n}").status_code == 404
    for _ in range(SCRAPES):
        with httpx.Client(base_url=server.url, timeout=10) as http:
            response = http.get("/health/metrics")
        assert response.status_code == 200
        assert counter(response.text, **labels) == REQUESTS


def test_supervisor_and_workers_log_json_only(server: LiveServer) -> None:
    records = server.json_lines()
    started = [r for r in records if "Started server process" in str(r.get("event"))]
    assert len(started) == 2


def _samples(exposition: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == name
    ]


def test_every_worker_reports_its_own_pool_and_memory(server: LiveServer) -> None:
    """Each worker refreshes its gauges itself (app.observability.worker_gauges): a scrape shows
    both workers' memory and both pools, whichever worker serves it."""
    with httpx.Client(base_url=server.url, timeout=10) as http:
        exposition = http.get("/health/metrics").text
    rss = _samples(exposition, "app_process_resident_memory_bytes")
    assert {int(labels["pid"]) for labels, _ in rss} == _pids_serving(server)
    assert all(value > 10_000_000 for _, value in rss)
    [(_, pool_max)] = _samples(exposition, "db_pool_max_connections")
    assert pool_max == 2 * (10 + 20), "the default pool (10 + 20 overflow), once per worker"


def test_readiness_is_the_newest_measurement(server: LiveServer) -> None:
    for _ in range(6):
        with httpx.Client(base_url=server.url, timeout=10) as http:
            [(_, ready)] = _samples(http.get("/health/metrics").text, "app_ready")
        assert ready == 1
