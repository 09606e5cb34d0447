"""A psutil snapshot of the host and this process for detailed health."""

from __future__ import annotations

import os
from typing import Any

import psutil

# Keyed by pid: a forked worker must not report its parent's figures, and cpu_percent needs
# the same Process object between calls to measure an interval.
_processes: dict[int, psutil.Process] = {}


def _process() -> psutil.Process:
    pid = os.getpid()
    if pid not in _processes:
        _processes[pid] = psutil.Process(pid)
    return _processes[pid]


def snapshot() -> dict[str, Any]:
    """Blocking (reads /proc): call it through asyncio.to_thread."""
    process = _process()
    with process.oneshot():
        rss = process.memory_info().rss
        threads = process.num_threads()
        cpu = process.cpu_percent(interval=None)
        fds = process.num_fds() if hasattr(process, "num_fds") else None
    memory = psutil.virtual_memory()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cpu_percent": psutil.cpu_percent(interval=None),
        "cpu_count": psutil.cpu_count(),
        "memory_percent": memory.percent,
        "memory_available_bytes": memory.available,
        "load_average": [round(x, 2) for x in load],
        "process_rss_bytes": rss,
        "process_cpu_percent": cpu,
        "process_threads": threads,
        "process_open_fds": fds,
        "pid": process.pid,
    }


def process_rss_bytes() -> int:
    return int(_process().memory_info().rss)


# cgroup v2, then v1: the first readable one is the container's limit.
CGROUP_MEMORY_LIMIT_FILES = (
    "/sys/fs/cgroup/memory.max",
    "/sys/fs/cgroup/memory/memory.limit_in_bytes",
)


def memory_limit_bytes(limit_files: tuple[str, ...] = CGROUP_MEMORY_LIMIT_FILES) -> int:
    """The memory this container may use: its cgroup limit, or the machine's RAM when there is
    none ("max" in v2; v1 reports a page-rounded huge number instead). Blocking (reads files)."""
    total = int(psutil.virtual_memory().total)
    for path in limit_files:
        try:
            with open(path, encoding="ascii") as file:
                raw = file.read().strip()
        except OSError:
            continue
        if raw.isdigit():
            return min(int(raw), total)
        return total
    return total
