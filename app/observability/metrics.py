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
from prometheus_client.openmetrics import exposition as openmetrics_exposition

OPENMETRICS_CONTENT_TYPE = openmetrics_exposition.CONTENT_TYPE_LATEST

# Request latency buckets (seconds): dense where an API should answer, sparse for the tail.
# 0.3 is the latency SLO's threshold (docs/observability.md): the SLI reads the le="0.3" bucket,
# so the boundary must exist exactly; an interpolated quantile would not do.
LATENCY_SLO_SECONDS = 0.3
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    LATENCY_SLO_SECONDS,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


def multiprocess_dir() -> str | None:
    """Set and not empty, as prometheus_client itself reads it (empty: single-process mode)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


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
            "Time to answer an HTTP request, by method, route template and status",
            ["method", "route", "status"],
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
        self.db_pool_max = Gauge(
            "db_pool_max_connections",
            "Connections the pool may open (pool size + overflow); the saturation alert's divisor",
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
        self.replica_lag = Gauge(
            "db_replica_lag_seconds",
            "Replica lag at the last background check (0 caught up; +Inf unknown or down)",
            ["replica"],
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.replica_usable = Gauge(
            "db_replica_usable",
            "1 when the replica serves reads (answering, in recovery, within the max lag)",
            ["replica"],
            registry=reg,
            multiprocess_mode="livemin",
        )
        self.breaker_state = Gauge(
            "circuit_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open",
            ["name"],
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.cache_requests = Counter(
            "cache_requests_total",
            "Cache reads by cache and result: hit, miss, or error (Redis failed)",
            ["cache", "result"],
            registry=reg,
        )
        self.rate_limit_decisions = Counter(
            "rate_limit_decisions_total",
            "Rate-limit rules applied to requests, by rule and outcome (allowed or limited)",
            ["rule", "outcome"],
            registry=reg,
        )
        self.retries = Counter(
            "retries_total",
            "Retries scheduled after a transient failure, by operation",
            ["operation"],
            registry=reg,
        )
        self.ready = Gauge(
            "app_ready",
            "1 when readiness passes (not draining, required dependencies up), else 0; "
            "evaluated at scrape time",
            registry=reg,
            # Measured by whichever worker serves the scrape: the newest measurement is the
            # answer, not the lowest of every worker's last one (which could be minutes old).
            multiprocess_mode="livemostrecent",
        )
        self.dependency_up = Gauge(
            "app_dependency_up",
            "1 when the dependency answered its health check at scrape time, else 0",
            ["dependency"],
            registry=reg,
            multiprocess_mode="livemostrecent",
        )
        self.memory_limit = Gauge(
            "app_memory_limit_bytes",
            "Memory the container may use (cgroup limit; the machine's RAM when unlimited)",
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

    def render(self, openmetrics: bool = False) -> tuple[bytes, str]:
        """The exposition; in the OpenMetrics format (which carries exemplars) when asked."""
        registry = self.registry
        if self.multiprocess:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        if openmetrics:
            payload = openmetrics_exposition.generate_latest(registry)  # type: ignore[no-untyped-call]
            return payload, OPENMETRICS_CONTENT_TYPE
        return generate_latest(registry), CONTENT_TYPE_LATEST
