"""Per-call timing for the in-process cost scripts (bench.*_cost)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def per_call(
    call: Callable[[], Awaitable[Any]], calls: int, rounds: int
) -> tuple[float, float]:
    """Median wall-clock and CPU microseconds per call (CPU: this process only)."""
    wall, cpu = [], []
    for _ in range(rounds):
        started, started_cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            await call()
        wall.append((time.perf_counter() - started) / calls * 1e6)
        cpu.append((time.process_time() - started_cpu) / calls * 1e6)
    return statistics.median(wall), statistics.median(cpu)
