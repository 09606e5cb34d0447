"""Prometheus instruments and exposition.

Instruments live on an AppMetrics object created with the app (no module-level registry), so
several apps can coexist in one test process. With PROMETHEUS_MULTIPROC_DIR set (several uvicorn
workers), prometheus_client writes values to per-process files and exposition merges them, so a
request is counted once whichever worker served it and whichever worker is scraped.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

# Request latency buckets (seconds): dense where an API should answer, sparse for the tail.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


class AppMetrics:
    def __init__(self) -> None:
        self.multiprocess = multiprocess_dir() is not None
        self.registry = CollectorRegistry(auto_describe=True)
        if not self.multiprocess:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
        reg = self.registry
        self.http_requests = Counter(
            "http_requests_total",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=reg,
        )
        self.http_duration = Histogram(
            "http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.http_in_flight = Gauge(
            "http_requests_in_flight",
            "HTTP requests being served",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.db_pool = Gauge(
            "db_pool_connections",
            "Database pool connections by state",
            ["state"],
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.db_connections_opened = Counter(
            "db_connections_opened_total", "Database connections opened", registry=reg
        )
        self.db_checkouts = Counter(
            "db_connections_checked_out_total", "Connections checked out of the pool", registry=reg
        )
        self.db_invalidated = Counter(
            "db_connections_invalidated_total", "Connections invalidated (errors)", registry=reg
        )
        self.breaker_state = Gauge(
            "circuit_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open",
            ["name"],
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.process_rss = Gauge(
            "app_process_resident_memory_bytes",
            "Resident memory of the worker process (one series per pid in multiprocess mode)",
            registry=reg,
            multiprocess_mode="liveall",
        )

    def process_exited(self) -> None:
        """Drop this worker's live gauges from the shared files (a restarted worker's figures
        must not be summed forever); counters and histograms are kept, as Prometheus expects."""
        if self.multiprocess:
            mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    def render(self) -> tuple[bytes, str]:
        if self.multiprocess:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
