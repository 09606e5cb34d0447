"""Gauges each worker owns (its pool and its memory), kept fresh in every worker.

With several uvicorn workers (multiprocess mode) one worker serves a scrape, yet the exposition
sums or lists every worker's last values: set only while serving a scrape, a worker's pool and
memory would be reported as they were at the last scrape it happened to serve. So each worker
refreshes its own every few seconds, and the worker serving a scrape refreshes first. Readiness
is not here: it costs a database round trip, and is exported as the most recent value any
worker measured (`AppMetrics.ready`).
"""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.db.database_production import pool_status
from app.observability import system
from app.observability.metrics import AppMetrics

REFRESH_SECONDS = 5.0


def _memory_figures() -> tuple[int, int]:
    return system.process_rss_bytes(), system.memory_limit_bytes()


async def refresh_worker_gauges(
    metrics: AppMetrics, engine: AsyncEngine, settings: Settings
) -> None:
    for state, value in pool_status(engine).items():
        metrics.db_pool.labels(state).set(value)
    metrics.db_pool_max.set(settings.DB_POOL_SIZE + settings.DB_MAX_OVERFLOW)
    rss, limit = await asyncio.to_thread(_memory_figures)  # reads /proc and the cgroup
    metrics.process_rss.set(rss)
    metrics.memory_limit.set(limit)


async def keep_worker_gauges_fresh(
    metrics: AppMetrics, engine: AsyncEngine, settings: Settings, every: float = REFRESH_SECONDS
) -> None:
    """Until cancelled (at shutdown)."""
    while True:
        await refresh_worker_gauges(metrics, engine, settings)
        await asyncio.sleep(every)
