"""A picture of the dashboard's SLO row, drawn from a real run instead of a running Grafana.

    python -m bench.slo_plot [--minutes 4] [--out docs/img/slo-panel.png]

Starts Postgres, Redis and the app (production settings) as `make bench` does, seeds through the
API, then a real Prometheus (Debian's /usr/bin/prometheus) that scrapes /health/metrics every
second with the metrics token and evaluates deploy/prometheus/rules/*.yml unchanged, every
second. Moderate traffic (reads and writes) runs through five phases: healthy, Postgres stopped
(503s), recovery, overload (wrk with many connections: slow answers), recovery. The recorded
SLIs, burn rates and the ALERTS series are then read back from Prometheus' HTTP API and drawn.
Progress goes to stderr, a summary to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench import load as loads
from bench.environment import ROOT, AppServer, production_env, services
from bench.report import machine
from bench.seed import Seeded, SeedPlan, seed
from bench.slo_drawing import BUDGET, draw
from devstack.prometheus import (
    PROMETHEUS,
    PrometheusServer,
    prometheus_installed,
    prometheus_version,
)
from devstack.servers import PostgresServer

RULES = ROOT / "deploy" / "prometheus" / "rules"
JOB = "conduit-api"
RATE = 40.0  # requests per second of the steady traffic: moderate, the machine is shared
# wrk on GET /api/articles: far more than one worker serves at once, so answers queue (slow,
# not failed: the wait for a pooled connection stays under DB_POOL_TIMEOUT).
OVERLOAD_CONNECTIONS = 256
SMALL_SEED = SeedPlan(users=20, articles=200, comments=400, follows_per_user=5, favourites=400)


@dataclass(frozen=True)
class Phase:
    name: str
    kind: str  # healthy | outage | overload
    seconds: float


def plan(minutes: float) -> list[Phase]:
    """60 s healthy, 45 s Postgres stopped, 45 s recovery, 45 s overload, 45 s recovery at 4."""
    scale = minutes * 60 / 240
    shape = [
        ("healthy", "healthy", 60),
        ("Postgres stopped", "outage", 45),
        ("recovery", "healthy", 45),
        (f"overload ({OVERLOAD_CONNECTIONS} connections)", "overload", 45),
        ("recovery", "healthy", 45),
    ]
    return [Phase(name, kind, seconds * scale) for name, kind, seconds in shape]


@dataclass
class Sample:
    at: float
    status: int  # 0: no answer (timeout, refused)
    seconds: float


@dataclass
class Span:
    phase: Phase
    start: float
    end: float
    wrk: loads.Measured | None = None
    samples: list[Sample] = field(default_factory=list)


class Traffic:
    """Open-loop traffic at a fixed rate: lists, articles, feeds, tags and 15 % writes."""

    def __init__(self, client: httpx.AsyncClient, seeded: Seeded, rate: float) -> None:
        self.client = client
        self.seeded = seeded
        self.rate = rate
        self.rng = random.Random(20261126)  # traffic shape, not secrets
        self.samples: list[Sample] = []

    def _request(self) -> tuple[str, str, dict[str, str]]:
        roll, slug = self.rng.random(), self.rng.choice(self.seeded.slugs)
        auth = {"Authorization": f"Token {self.rng.choice(self.seeded.tokens)}"}
        if roll < 0.40:
            return "GET", f"/api/articles?limit=20&offset={self.rng.randint(0, 180)}", {}
        if roll < 0.65:
            return "GET", f"/api/articles/{slug}", {}
        if roll < 0.75:
            return "GET", "/api/articles/feed?limit=20", auth
        if roll < 0.85:
            return "GET", "/api/tags", {}
        if roll < 0.90:
            return "POST", f"/api/articles/{slug}/comments", auth
        return ("POST" if roll < 0.95 else "DELETE"), f"/api/articles/{slug}/favorite", auth

    async def _one(self) -> None:
        method, url, headers = self._request()
        body = {"comment": {"body": "A comment from the SLO run."}} if "comments" in url else None
        at, started = time.time(), time.perf_counter()
        try:
            response = await self.client.request(method, url, headers=headers, json=body)
            status = response.status_code
        except httpx.HTTPError:
            status = 0
        self.samples.append(Sample(at, status, time.perf_counter() - started))

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Task[None]] = set()
        next_at = loop.time()
        while not stop.is_set():
            task = asyncio.create_task(self._one())
            pending.add(task)
            task.add_done_callback(pending.discard)
            next_at += 1 / self.rate
            await asyncio.sleep(max(0.0, next_at - loop.time()))
        await asyncio.gather(*pending)


async def drive(
    app_url: str, seeded: Seeded, phases: Sequence[Phase], postgres: PostgresServer, workdir: Path
) -> list[Span]:
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=app_url, timeout=10.0, limits=limits) as client:
        traffic = Traffic(client, seeded, RATE)
        stop = asyncio.Event()
        running = asyncio.create_task(traffic.run(stop))
        spans = []
        for phase in phases:
            sys.stderr.write(f"  {phase.name}: {phase.seconds:.0f} s\n")
            span = Span(phase, time.time(), 0.0)
            if phase.kind == "outage":
                await asyncio.to_thread(postgres.stop, "fast")
                await asyncio.sleep(max(0.0, span.start + phase.seconds - time.time()))
                await asyncio.to_thread(postgres.start)
            elif phase.kind == "overload":
                overload = loads.Load("list", args=("180",), connections=OVERLOAD_CONNECTIONS)
                tool = loads.generator()
                span.wrk = await asyncio.to_thread(
                    loads.run, app_url, overload, phase.seconds, tool, workdir
                )
            else:
                await asyncio.sleep(phase.seconds)
            span.end = time.time()
            spans.append(span)
        stop.set()
        await running
    for span in spans:
        span.samples = [s for s in traffic.samples if span.start <= s.at < span.end]
    return spans


# What each panel draws; every expression reads the recording rules, except the 10 s SLIs,
# which show when the incident itself starts and ends (the 5m windows remember it 5 minutes).
SELECT = f'job="{JOB}",route!~"/health.*"'
API_OK = f'job="{JOB}",route=~"/api/.*",status!~"5.."'
QUERIES = {
    "availability 5m": "1 - slo:availability:error_ratio:rate5m",
    "latency 5m": "1 - slo:latency:error_ratio:rate5m",
    "availability 10s": (
        f'1 - (sum(rate(http_requests_total{{{SELECT},status=~"5.."}}[10s]))'
        f" or 0 * sum(rate(http_requests_total{{{SELECT}}}[10s])))"
        f" / sum(rate(http_requests_total{{{SELECT}}}[10s]))"
    ),
    "latency 10s": (
        f'sum(rate(http_request_duration_seconds_bucket{{{API_OK},le="0.3"}}[10s]))'
        f" / sum(rate(http_request_duration_seconds_count{{{API_OK}}}[10s]))"
    ),
    **{
        f"{slo} burn {window}": f"slo:{slo}:error_ratio:rate{window} / {budget}"
        for slo, budget in BUDGET.items()
        for window in ("5m", "30m", "1h")
    },
    "requests": (
        f'sum by (class) (label_replace(rate(http_requests_total{{{SELECT}}}[5s]), "class", '
        '"${1}xx", "status", "(.).."))'
    ),
}
Series = tuple[list[float], list[float]]


def collect(prometheus: PrometheusServer, start: float, end: float) -> dict[str, Series]:
    series: dict[str, Series] = {}
    for name, expr in QUERIES.items():
        for result in prometheus.query_range(expr, start, end, 1):
            label = result["metric"].get("class")
            key = f"{name} {label}" if label else name
            series[key] = _with_gaps([(float(t), float(v)) for t, v in result["values"]])
    return series


def _with_gaps(points: list[tuple[float, float]], step: float = 1.0) -> Series:
    """A NaN wherever Prometheus has no value (failed scrapes), so no line is drawn across."""
    times: list[float] = []
    values: list[float] = []
    for t, v in points:
        if times and t - times[-1] > 1.5 * step:
            times.append(times[-1] + step)
            values.append(math.nan)
        times.append(t)
        values.append(v)
    return times, values


def app_counts(prometheus: PrometheusServer, start: float, end: float) -> dict[str, int]:
    """Requests and 5xx the app itself counted during the run (its counters, not the clients')."""
    window = f"{math.ceil(end - start)}s"
    counts = {}
    for name, status in (("all", ""), ("5xx", ',status=~"5.."')):
        result = prometheus.query(
            f"sum(increase(http_requests_total{{{SELECT}{status}}}[{window}]))", at=end
        )
        counts[name] = round(float(result[0]["value"][1])) if result else 0
    return counts


@dataclass
class Alert:
    name: str
    detail: str  # the window of an SLO alert, the breaker of a breaker alert
    severity: str
    intervals: dict[str, list[tuple[float, float]]]  # alertstate -> [(start, end)]


SLO_ALERTS = [
    (f"Conduit{slo}{speed}Burn", window)
    for slo in ("Availability", "Latency")
    for speed, window in (("Fast", "1h"), ("Fast", "6h"), ("Slow", "1d"), ("Slow", "3d"))
]


def alerts(prometheus: PrometheusServer, start: float, end: float) -> list[Alert]:
    found: dict[tuple[str, str], Alert] = {
        (name, window): Alert(name, window, "page" if "Fast" in name else "ticket", {})
        for name, window in SLO_ALERTS
    }
    for result in prometheus.query_range('ALERTS{alertname=~"Conduit.*"}', start, end, 1):
        labels = result["metric"]
        key = (labels["alertname"], labels.get("window") or labels.get("name", ""))
        alert = found.setdefault(key, Alert(*key, labels.get("severity", ""), {}))
        times = [float(t) for t, _ in result["values"]]
        alert.intervals[labels["alertstate"]] = _intervals(times)
    return list(found.values())


def _intervals(times: list[float], step: float = 1.0) -> list[tuple[float, float]]:
    spans: list[tuple[float, float]] = []
    for t in times:
        if spans and t - spans[-1][1] <= 1.5 * step:
            spans[-1] = (spans[-1][0], t)
        else:
            spans.append((t, t))
    return [(a, b + step) for a, b in spans]


def _p(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def summary(
    spans: Sequence[Span],
    series: dict[str, Series],
    found: Sequence[Alert],
    counted: dict[str, int],
) -> str:
    t0 = spans[0].start
    lines = [
        f"{'phase':<28}{'from s':>7}{'secs':>6}{'requests':>10}{'5xx':>7}{'no answer':>10}"
        f"{'p50 ms':>8}{'p99 ms':>8}"
    ]
    for span in spans:
        samples = span.samples
        fivexx = sum(1 for s in samples if s.status >= 500)
        lost = sum(1 for s in samples if s.status == 0)
        took = [s.seconds for s in samples]
        lines.append(
            f"{span.phase.name:<28}{span.start - t0:>7.0f}{span.end - span.start:>6.0f}"
            f"{len(samples):>10}{fivexx:>7}{lost:>10}{_p(took, 0.5):>8.0f}{_p(took, 0.99):>8.0f}"
        )
        if span.wrk:
            w = span.wrk
            lines.append(
                f"{'  + wrk, ' + str(OVERLOAD_CONNECTIONS) + ' connections':<28}{'':>13}"
                f"{w.requests:>10}{w.non2xx:>7}{w.socket_errors:>10}{w.p50_ms:>8.0f}"
                f"{w.p99_ms:>8.0f}   (wrk's 5xx column: every non-2xx)"
            )
    total = sum(len(s.samples) + (s.wrk.requests if s.wrk else 0) for s in spans)
    lines.append(
        f"requests sent: {total}; the app counted {counted.get('all', 0)} (health routes "
        f"excluded), {counted.get('5xx', 0)} of them 5xx"
    )
    for slo in BUDGET:
        times, values = series.get(f"{slo} burn 5m", ([], []))
        finite = [(v, t) for t, v in zip(times, values, strict=True) if math.isfinite(v)]
        if finite:
            peak, at = max(finite)
            lines.append(f"peak {slo} burn rate (5m window): {peak:.1f}x at t={at - t0:.0f} s")
        times, values = series.get(f"{slo} 5m", ([], []))
        finite_sli = [v for v in values if math.isfinite(v)]
        if finite_sli:
            lines.append(f"lowest {slo} SLI (5m window): {min(finite_sli):.2%}")
    lines.append("alerts:")
    for alert in found:
        states = [
            f"{state} " + ", ".join(f"t={a - t0:.0f}..{b - t0:.0f} s" for a, b in spans_)
            for state, spans_ in sorted(alert.intervals.items(), reverse=True)
        ]
        lines.append(f"  {alert.name} {alert.detail}: {'; '.join(states) or 'never'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.slo_plot", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--minutes", type=float, default=4.0, help="load duration (phases scale)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "slo-panel.png")
    options = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not prometheus_installed():
        sys.stderr.write(
            f"{PROMETHEUS} not found: install Debian's prometheus (apt-get install -y prometheus)\n"
        )
        return 2
    phases = plan(options.minutes)
    workdir = Path(tempfile.mkdtemp(prefix="conduit-slo-"))
    workdir.chmod(0o755)  # Postgres runs as an unprivileged user when the bench runs as root
    started = time.monotonic()
    try:
        with services(workdir) as svc:
            env = production_env(svc, workdir, workers=1)
            with AppServer("app.main:app", env, workdir / "app.log").start("/health") as app:
                sys.stderr.write(f"slo_plot: app at {app.url}, workdir {workdir}; seeding ...\n")
                seeded = asyncio.run(seed(app.url, SMALL_SEED))
                prometheus = PrometheusServer(
                    workdir / "prometheus", app.url.removeprefix("http://"), job=JOB,
                    metrics_path="/health/metrics", token=env["METRICS_TOKEN"],
                    rule_files=[f"{RULES}/*.yml"],
                )  # fmt: skip
                try:
                    prometheus.start()
                    time.sleep(5)  # a few scrapes first; the rules start from no data
                    sys.stderr.write(f"prometheus at {prometheus.url} scrapes the app; load:\n")
                    spans = asyncio.run(drive(app.url, seeded, phases, svc.postgres, workdir))
                    time.sleep(3)  # the last scrape and rule evaluation
                    start, end = spans[0].start - 2, spans[-1].end + 3
                    series = collect(prometheus, start, end)
                    found = alerts(prometheus, start, end)
                    counted = app_counts(prometheus, start, end)
                finally:
                    prometheus.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    title, caption = _labels(spans)
    draw(options.out, spans, series, found, title, caption)
    took = time.monotonic() - started
    text = summary(spans, series, found, counted)
    sys.stdout.write(f"{text}\npicture: {options.out} ({took:.0f} s)\n")
    return 0


WINDOWS = {"5m": 300, "30m": 1800, "1h": 3600, "2h": 7200, "6h": 21600, "1d": 86400, "3d": 259200}


def _labels(spans: Sequence[Span]) -> tuple[str, str]:
    info = machine()
    outage = next(s for s in spans if s.phase.kind == "outage")
    overload = next(s for s in spans if s.phase.kind == "overload")
    t0 = spans[0].start
    title = (
        "conduit-api SLO panel, from a real run: Postgres stopped for "
        f"{outage.end - outage.start:.0f} s at t={outage.start - t0:.0f} s, "
        f"overload ({OVERLOAD_CONNECTIONS} wrk connections) for "
        f"{overload.end - overload.start:.0f} s at t={overload.start - t0:.0f} s\n"
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(t0))}, {info['nproc']} CPUs "
        f"({info['cpu_model']}), 1 uvicorn worker, {RATE:.0f} req/s steady traffic"
    )
    seconds = spans[-1].end - t0
    longer = [name for name, length in WINDOWS.items() if length > seconds]
    caption = (
        f"Prometheus {prometheus_version()} scraping /health/metrics every 1 s; "
        "deploy/prometheus/rules/*.yml evaluated unchanged every 1 s (the 1d/3d/30d group every "
        f"1 min). The run holds only {seconds / 60:.1f} minutes of data, less than the "
        f"{', '.join(longer)} windows, so each of them holds the whole run: its error ratio is "
        "the ratio since t=0. A 5m window forgets an incident only 5 minutes after it ends, and "
        "the 6h, 1d and 3d alerts fire here because no hours of healthy history hold them back, "
        "as they would in production. The thin 10 s SLIs (not recorded rules) show when each "
        "incident starts and ends. The dashboard's 30-day error-budget gauges are left out: over "
        "minutes of data they mean nothing."
    )
    return title, caption


if __name__ == "__main__":
    raise SystemExit(main())
