"""Side-by-side CPU cost of app variants, measured in interleaved rounds.

One measurement of a variant after another (15 s each) moved by up to ±15 % between runs on
this machine with nothing changed: the host's speed drifts over minutes. A 10 % budget (tracing
at 1 %) cannot be judged that way. Here every variant serves at once, and the load visits them
in turn, in short slices, for several rounds, in an order reversed every round (A B C, C B A,
...), so a drift falls on every variant alike. Each variant's figures are the sums over its
slices; its p50/p99 are the medians of its slices'.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bench import load as loads
from bench.environment import AppServer, RssSampler
from bench.report import Row

MIN_SLICE_SECONDS = 3.0


class SliceMeter(Protocol):
    """Figures of one slice besides the app's own (e.g. Postgres CPU), summed per variant into
    the row's `extra`."""

    def start(self, variant: str) -> None: ...

    def stop(self, variant: str) -> dict[str, float]: ...


@dataclass
class _Totals:
    requests: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    non2xx: int = 0
    socket_errors: int = 0
    peak_rss: int = 0
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    metered: dict[str, float] = field(default_factory=dict)


def measure(
    variants: Sequence[tuple[str, AppServer]],
    load: loads.Load,
    *,
    seconds: float,
    rounds: int,
    tool: str,
    workdir: Path,
    load_for: Mapping[str, loads.Load] | None = None,
    meter: SliceMeter | None = None,
) -> list[Row]:
    """`seconds` of load per variant in all, split into `rounds` slices. `load_for` gives a
    variant a load of its own (its own data files); `meter` adds figures per slice."""
    slice_seconds = max(seconds / rounds, MIN_SLICE_SECONDS)
    totals = {name: _Totals() for name, _ in variants}
    own = load_for or {}
    for name, server in variants:  # warm every variant before any is measured
        loads.run(server.url, own.get(name, load), MIN_SLICE_SECONDS, tool, workdir)
    for round_number in range(rounds):
        order = variants if round_number % 2 == 0 else list(reversed(variants))
        for name, server in order:
            if meter is not None:
                meter.start(name)
            cpu_before = server.cpu_seconds()
            with RssSampler(server) as rss:
                measured = loads.run(server.url, own.get(name, load), slice_seconds, tool, workdir)
            total = totals[name]
            total.cpu_seconds += server.cpu_seconds() - cpu_before
            if meter is not None:
                for key, value in meter.stop(name).items():
                    total.metered[key] = total.metered.get(key, 0.0) + value
            total.requests += measured.requests
            total.seconds += slice_seconds
            total.non2xx += measured.non2xx
            total.socket_errors += measured.socket_errors
            total.peak_rss = max(total.peak_rss, rss.peak_bytes)
            total.p50.append(measured.p50_ms)
            total.p99.append(measured.p99_ms)
    return [
        Row(
            workload=name,
            workers=server.workers,
            connections=load.connections,
            requests=total.requests,
            rps=total.requests / total.seconds,
            p50_ms=statistics.median(total.p50),
            p99_ms=statistics.median(total.p99),
            non2xx=total.non2xx,
            socket_errors=total.socket_errors,
            cpu_ms_per_request=total.cpu_seconds * 1000 / total.requests if total.requests else 0,
            peak_rss_mb=total.peak_rss / 2**20,
            extra={"rounds": rounds, "slice_s": slice_seconds, **total.metered},
        )
        for (name, server), total in ((v, totals[v[0]]) for v in variants)
    ]
