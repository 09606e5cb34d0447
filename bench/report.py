"""Figures out: the table on stdout, JSON lines, a Markdown table, the chart and the targets."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil


@dataclass
class Row:
    workload: str
    workers: int
    connections: int
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    socket_errors: int
    cpu_ms_per_request: float
    peak_rss_mb: float
    extra: dict[str, Any] = field(default_factory=dict)
    rps_ratio: float | None = None
    cpu_ratio: float | None = None


def machine() -> dict[str, Any]:
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def add_ratios(rows: Sequence[Row], ceiling: Row | None) -> None:
    if ceiling is None:
        return
    for row in rows:
        row.rps_ratio = row.rps / ceiling.rps if ceiling.rps else None
        row.cpu_ratio = (
            row.cpu_ms_per_request / ceiling.cpu_ms_per_request
            if ceiling.cpu_ms_per_request
            else None
        )


HEADER = (
    "workload",
    "workers",
    "conns",
    "req/s",
    "x ceiling",
    "p50 ms",
    "p99 ms",
    "non-2xx",
    "sock err",
    "CPU ms/req",
    "x ceiling CPU",
    "PG ms/req",
    "peak RSS MB",
)


def _cells(row: Row) -> list[str]:
    def ratio(value: float | None) -> str:
        return f"{value:.2f}" if value is not None else "-"

    return [
        row.workload,
        str(row.workers),
        str(row.connections),
        f"{row.rps:,.0f}",
        ratio(row.rps_ratio),
        f"{row.p50_ms:.1f}",
        f"{row.p99_ms:.1f}",
        str(row.non2xx),
        str(row.socket_errors),
        f"{row.cpu_ms_per_request:.3f}",
        ratio(row.cpu_ratio),
        _postgres_cpu(row),
        f"{row.peak_rss_mb:.0f}",
    ]


def _postgres_cpu(row: Row) -> str:
    """Postgres CPU per request (every process of the cluster), when the row recorded it."""
    value = row.extra.get("pg_cpu_ms_per_request")
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


def text_table(rows: Sequence[Row]) -> str:
    table = [list(HEADER), *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    lines = [
        "  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)) for line in table
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def write_jsonl(path: Path, meta: dict[str, Any], rows: Sequence[Row]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        handle.write(json.dumps({"type": "meta", **meta}) + "\n")
        for row in rows:
            handle.write(json.dumps({"type": "workload", **asdict(row)}) + "\n")


def chart(path: Path, rows: Sequence[Row], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r.workload} ({r.workers}w)" for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.45 * len(rows) + 1.8))
    colours = ["#888888" if r.workload == "bare ceiling" else "#2a7ab9" for r in rows]
    left.barh(labels, [r.rps for r in rows], color=colours)
    left.set_xlabel("requests per second (higher is better)")
    right.barh(labels, [r.p99_ms for r in rows], color=colours)
    right.set_xlabel("p99 latency, ms (lower is better)")
    right.set_yticklabels([])
    for axis in (left, right):
        axis.invert_yaxis()
        axis.grid(axis="x", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


CEILING_UNITS = {"list signed in": 10, "article signed in": 6, "feed": 6, "write mix": 10}


def targets(rows: Sequence[Row]) -> list[tuple[str, bool, str]]:
    """(target, met, figure) for every target of the issue that this run measured."""
    by = {(r.workload, r.workers): r for r in rows}
    out: list[tuple[str, bool, str]] = []

    def get(name: str, workers: int = 1) -> Row | None:
        return by.get((name, workers))

    health, tags = get("health"), get("tags")
    if health and health.rps_ratio is not None:
        out.append(("health >= 85% of ceiling req/s", health.rps_ratio >= 0.85, _pct(health)))
    if tags and tags.rps_ratio is not None:
        out.append(("tags >= 50% of ceiling req/s", tags.rps_ratio >= 0.50, _pct(tags)))
    if row := get("list"):
        cpu, p99 = row.cpu_ms_per_request, row.p99_ms
        out.append(("list <= 1.5 ms CPU/req", cpu <= 1.5, f"{cpu:.3f} ms"))
        out.append(("list p99 <= 150 ms", p99 <= 150, f"{p99:.1f} ms"))
    if row := get("feed"):
        cpu = row.cpu_ms_per_request
        out.append(("feed <= 1.8 ms CPU/req", cpu <= 1.8, f"{cpu:.3f} ms"))
    if row := get("article"):
        cpu = row.cpu_ms_per_request
        out.append(("article <= 0.6 ms CPU/req", cpu <= 0.6, f"{cpu:.3f} ms"))
    if row := get("write mix"):
        cpu = row.cpu_ms_per_request
        ok = cpu <= 1.5 and row.non2xx + row.socket_errors == 0
        out.append(("write mix <= 1.5 ms CPU/req, 0 errors", ok, f"{cpu:.3f} ms"))
    # Issue 15: signed-in reads and writes in ceiling units (app CPU per request over the bare
    # FastAPI app's).
    for name, most in CEILING_UNITS.items():
        if (row := get(name)) and row.cpu_ratio is not None:
            met = row.cpu_ratio <= most
            out.append((f"{name} <= {most:g} ceiling units", met, f"{row.cpu_ratio:.2f}"))
    storm, article = get("login storm"), get("article")
    if storm and article:
        ratio = storm.p99_ms / article.p99_ms if article.p99_ms else float("inf")
        out.append(("article p99 under login storm <= 3x", ratio <= 3, f"{ratio:.2f}x"))
    for name in ("list", "article"):
        one, two = get(name), get(name, 2)
        if one and two:
            ratio = two.rps / one.rps if one.rps else 0.0
            out.append((f"{name}: 2 workers >= 1.5x 1 worker", ratio >= 1.5, f"{ratio:.2f}x"))
    for name in ("article", "feed"):
        offs = [r for r in (get(f"{name} traced off"), get(f"{name} traced off again")) if r]
        sampled = get(f"{name} traced 1%")
        if offs and sampled:
            off = sum(r.cpu_ms_per_request for r in offs) / len(offs)
            cost = sampled.cpu_ms_per_request / off - 1 if off else float("inf")
            spread = (
                abs(offs[0].cpu_ms_per_request - offs[1].cpu_ms_per_request) / off
                if len(offs) == 2 and off
                else 0.0
            )
            figure = f"{cost:+.1%} (two untraced copies differ by {spread:.1%})"
            out.append((f"{name}: tracing at 1% costs < 10% CPU/req", cost < 0.10, figure))
    app_rows = [r for r in rows if r.workload != "bare ceiling"]
    if app_rows:
        peak = max(r.peak_rss_mb for r in app_rows)
        out.append(("peak RSS per worker <= 150 MB", peak <= 150, f"{peak:.0f} MB"))
        errors = sum(r.non2xx + r.socket_errors for r in rows)
        out.append(("0 non-2xx and 0 socket errors", errors == 0, str(errors)))
    return out


def _pct(row: Row) -> str:
    return f"{(row.rps_ratio or 0) * 100:.0f}%"


def targets_text(results: Sequence[tuple[str, bool, str]]) -> str:
    return "\n".join(f"  [{'met' if ok else 'MISSED'}] {name}: {fig}" for name, ok, fig in results)


def targets_markdown(results: Sequence[tuple[str, bool, str]]) -> str:
    lines = ["| target | figure | met |", "|---|---|---|"]
    lines += [f"| {name} | {fig} | {'yes' if ok else '**no**'} |" for name, ok, fig in results]
    return "\n".join(lines)
