"""`make bench`: start Postgres, Redis and the app (production settings), seed data through the
API, drive each workload with wrk (or locust) after a warm-up, and print the figures.

    python -m bench.run [--duration 15] [--warmup 3] [--only list,article] [--no-two-workers]
                        [--no-traced] [--chart bench/results/chart.png]
    python -m bench.run --scale 1m [--scale-reload]   # 500 vs 1M articles: bench/scale/
    python -m bench.run --scale curve                 # 500, 10k, 100k and 1M side by side

Durations also come from BENCH_DURATION / BENCH_WARMUP. Results: bench/results/<stamp>.jsonl
(one line per workload), <stamp>.md (the tables) and the chart; the table goes to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import interleaved, report
from bench import load as loads
from bench.environment import (
    DATABASE,
    AppServer,
    RssSampler,
    Services,
    production_env,
    services,
)
from bench.report import Row
from bench.scale.postgres import cluster_cpu_seconds, postmaster_pid
from bench.seed import PASSWORD, SeedPlan, seed
from devstack.otlp_receiver import OtlpReceiver

BENCH = Path(__file__).resolve().parent
STORM_CONNECTIONS = 8
# Tracing's cost: the same reads with tracing off (two identical copies: their difference is
# the noise), with 1 % of requests traced (the usual production setting) and with every
# request traced, the apps serving side by side and measured in interleaved rounds
# (bench/interleaved.py). Spans go to a real OTLP/HTTP receiver in
# this process, which counts them without decoding, so its CPU is not mistaken for the app's.
TRACED = {"off": None, "off again": None, "1%": "0.01", "100%": "1.0"}
TRACED_READS = ("article", "feed")
TRACED_ROUNDS = 6


@dataclass(frozen=True)
class Options:
    duration: float
    warmup: float
    connections: int
    only: frozenset[str] | None
    two_workers: bool
    chart: Path
    results: Path
    replica: bool = False
    traced: bool = True
    scale: str | None = None
    scale_reload: bool = False


def parse(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--duration", type=float, default=float(os.environ.get("BENCH_DURATION", "15"))
    )
    parser.add_argument("--warmup", type=float, default=float(os.environ.get("BENCH_WARMUP", "3")))
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--only", help="comma-separated workloads, e.g. list,article")
    parser.add_argument("--no-two-workers", action="store_true", help="skip the 2-worker runs")
    parser.add_argument("--no-traced", action="store_true", help="skip the tracing-cost runs")
    parser.add_argument("--chart", type=Path, default=None)
    parser.add_argument("--results", type=Path, default=BENCH / "results")
    parser.add_argument(
        "--replica",
        action="store_true",
        help="also start a streaming replica and set DATABASE_REPLICA_URLS to it",
    )
    parser.add_argument(
        "--scale",
        help="compare the reads on the 500-article set with larger bulk-loaded sets "
        "(1m, 100k, 10k, a comma-separated list, or curve) instead of the usual run",
    )
    parser.add_argument(
        "--scale-reload", action="store_true", help="load the --scale sets again, not reuse them"
    )
    ns = parser.parse_args(argv)
    only = frozenset(w.strip() for w in ns.only.split(",")) if ns.only else None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return Options(
        duration=ns.duration,
        warmup=ns.warmup,
        connections=ns.connections,
        only=only,
        two_workers=not ns.no_two_workers,
        chart=ns.chart or ns.results / f"{stamp}.png",
        results=ns.results / stamp,
        replica=ns.replica,
        traced=not ns.no_traced,
        scale=ns.scale,
        scale_reload=ns.scale_reload,
    )


class Bench:
    def __init__(self, options: Options, workdir: Path) -> None:
        self.options = options
        self.workdir = workdir
        self.tool = loads.generator()
        self.rows: list[Row] = []
        self.postgres_pid: int | None = None  # whose CPU (the whole cluster's) each row records

    def wanted(self, name: str) -> bool:
        """--only article also selects "article traced 1%" (the same workload, traced)."""
        only = self.options.only
        base = name.split(" traced ")[0]
        return only is None or name in only or base in only or name == "bare ceiling"

    def _warm(self, server: AppServer, load: loads.Load) -> None:
        if self.options.warmup > 0:
            loads.run(server.url, load, self.options.warmup, self.tool, self.workdir)

    def measure(
        self,
        name: str,
        server: AppServer,
        load: loads.Load,
        background: loads.Load | None = None,
    ) -> Row | None:
        if not self.wanted(name):
            return None
        self._warm(server, load)
        seconds = self.options.duration
        cpu_before = server.cpu_seconds()
        pg_before = cluster_cpu_seconds(self.postgres_pid) if self.postgres_pid else None
        with RssSampler(server) as rss:
            extra = (
                loads.start(server.url, background, seconds, self.tool, self.workdir)
                if background
                else None
            )
            measured = loads.run(server.url, load, seconds, self.tool, self.workdir)
            side = extra.result() if extra else None
        cpu = server.cpu_seconds() - cpu_before
        requests = measured.requests + (side.requests if side else 0)
        details: dict[str, object] = {"loadavg_1m": round(os.getloadavg()[0], 2)}
        if pg_before is not None and self.postgres_pid and requests:
            pg_cpu = cluster_cpu_seconds(self.postgres_pid) - pg_before
            details["pg_cpu_ms_per_request"] = round(pg_cpu * 1000 / requests, 4)
        if side:
            details.update(
                background_rps=round(side.rps, 1),
                background_p99_ms=side.p99_ms,
                background_errors=side.non2xx + side.socket_errors,
            )
        row = Row(
            workload=name,
            workers=server.workers,
            connections=load.connections,
            requests=measured.requests,
            rps=measured.rps,
            p50_ms=measured.p50_ms,
            p99_ms=measured.p99_ms,
            non2xx=measured.non2xx + (side.non2xx if side else 0),
            socket_errors=measured.socket_errors + (side.socket_errors if side else 0),
            cpu_ms_per_request=cpu * 1000 / requests if requests else 0.0,
            peak_rss_mb=rss.peak_bytes / 2**20,
            extra=details,
        )
        self.rows.append(row)
        sys.stderr.write(
            f"  {name} ({server.workers}w): {row.rps:,.0f} req/s, p99 {row.p99_ms:.1f} ms\n"
        )
        return row

    def run(self, svc: Services) -> None:
        conns = self.options.connections
        self.postgres_pid = postmaster_pid(svc.postgres)
        env1 = production_env(svc, self.workdir, workers=1)
        with AppServer("app.main:app", env1, self.workdir / "app-1.log").start("/health") as app:
            sys.stderr.write(f"seeding through {app.url} ...\n")
            started = time.monotonic()
            seeded = asyncio.run(seed(app.url, SeedPlan()))
            took = time.monotonic() - started
            sys.stderr.write(f"  {seeded.requests} requests in {took:.1f}s\n")
            # The seed's writes leave autovacuum and checkpoint work behind, which would be
            # counted in the first workloads' Postgres CPU: done now, before any is measured.
            svc.postgres.query("VACUUM (ANALYZE)", DATABASE)
            svc.postgres.query("CHECKPOINT")
            files = self._data_files(seeded.slugs, seeded.tokens, seeded.emails)
            reads = self._read_loads(files, conns)

            bare_server = AppServer("bench.bare_app:app", {}, self.workdir / "bare.log")
            with bare_server.start("/") as bare:
                self.measure("bare ceiling", bare, loads.Load("get", "/", connections=conns))
            for name, load in reads.items():
                self.measure(name, app, load)
            write = loads.Load("write", args=(files["slugs"], files["tokens"]), connections=conns)
            self.measure("write mix", app, write)
            login = loads.Load("login", args=(files["creds"],), connections=STORM_CONNECTIONS)
            self.measure("login", app, login)
            self.measure("login storm", app, reads["article"], background=login)
        self._traced(env1, reads)

        if self.options.two_workers and (self.wanted("list") or self.wanted("article")):
            env2 = production_env(svc, self.workdir, workers=2)
            log = self.workdir / "app-2.log"
            with AppServer("app.main:app", env2, log, workers=2).start("/health") as app2:
                for name in ("list", "article"):
                    self.measure(name, app2, reads[name])

    def _traced(self, env1: dict[str, str], reads: dict[str, loads.Load]) -> None:
        """The 1-worker app again (same key: the seeded tokens stay valid), once per variant."""
        wanted = [base for base in TRACED_READS if self.wanted(f"{base} traced 1%")]
        if not wanted or not self.options.traced:
            return
        with contextlib.ExitStack() as stack:
            receiver = stack.enter_context(OtlpReceiver(decode=False))
            servers: list[tuple[str, AppServer]] = []
            for share, ratio in TRACED.items():
                env = dict(env1)
                if ratio is not None:
                    env.update(
                        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
                        OTEL_TRACES_SAMPLER="parentbased_traceidratio",
                        OTEL_TRACES_SAMPLER_ARG=ratio,
                    )
                log = self.workdir / f"app-traced-{share.rstrip('%').replace(' ', '-')}.log"
                server = AppServer("app.main:app", env, log)
                servers.append((share, stack.enter_context(server.start("/health"))))
            for base in wanted:
                variants = [(f"{base} traced {share}", server) for share, server in servers]
                # 100 % apart: its exporter is still sending a slice's spans (its own CPU, on
                # the same two cores) while the next variant's slice runs.
                groups = [variants[:-1], variants[-1:]]
                rows = [
                    row
                    for group in groups
                    for row in interleaved.measure(
                        group,
                        reads[base],
                        seconds=self.options.duration,
                        rounds=TRACED_ROUNDS,
                        tool=self.tool,
                        workdir=self.workdir,
                    )
                ]
                for row in rows:
                    self.rows.append(row)
                    sys.stderr.write(
                        f"  {row.workload}: {row.cpu_ms_per_request:.3f} ms CPU/req, "
                        f"{row.rps:,.0f} req/s\n"
                    )
            sys.stderr.write(
                f"  OTLP receiver: {receiver.requests} exports, {receiver.bytes / 2**20:.1f} MiB\n"
            )

    def _data_files(self, slugs: list[str], tokens: list[str], emails: list[str]) -> dict[str, str]:
        contents = {
            "slugs": slugs,
            "tokens": tokens,
            "creds": [f"{email} {PASSWORD}" for email in emails],
        }
        paths = {}
        for name, lines in contents.items():
            path = self.workdir / f"{name}.txt"
            path.write_text("\n".join(lines) + "\n")
            paths[name] = str(path)
        return paths

    @staticmethod
    def _read_loads(files: dict[str, str], conns: int) -> dict[str, loads.Load]:
        return {
            "health": loads.Load("get", "/health", connections=conns),
            "tags": loads.Load("get", "/api/tags", connections=conns),
            "list": loads.Load("list", args=("480",), connections=conns),
            "list signed in": loads.Load("list", args=("480", files["tokens"]), connections=conns),
            "article": loads.Load("article", args=(files["slugs"],), connections=conns),
            "article signed in": loads.Load(
                "article", args=(files["slugs"], files["tokens"]), connections=conns
            ),
            "feed": loads.Load("feed", args=(files["tokens"],), connections=conns),
        }


def _report(options: Options, bench: Bench, meta: dict[str, object]) -> None:
    ceiling = next((r for r in bench.rows if r.workload == "bare ceiling"), None)
    report.add_ratios(bench.rows, ceiling)
    results = report.targets(bench.rows)
    table = report.text_table(bench.rows)
    sys.stdout.write(f"\n{table}\n\ntargets:\n{report.targets_text(results)}\n")
    report.write_jsonl(options.results.with_suffix(".jsonl"), meta, bench.rows)
    markdown = f"{report.markdown_table(bench.rows)}\n\n{report.targets_markdown(results)}\n"
    options.results.with_suffix(".md").write_text(markdown)
    title = (
        f"conduit-api: {meta['generator']}, {options.connections} connections, {meta['nproc']} CPUs"
    )
    report.chart(options.chart, bench.rows, title)
    sys.stdout.write(f"\nresults: {options.results}.jsonl, .md; chart: {options.chart}\n")


def _scale(options: Options, workdir: Path) -> int:
    from bench.scale import runner

    assert options.scale is not None
    scale = runner.ScaleOptions(
        sizes=runner.sizes_of(options.scale),
        duration=options.duration,
        connections=options.connections,
        rounds=runner.ROUNDS,
        reload=options.scale_reload,
        only=options.only,
        results=options.results,
    )
    try:
        return runner.run(scale, workdir, loads.generator())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None, clock: Callable[[], float] = time.time) -> int:
    options = parse(sys.argv[1:] if argv is None else argv)
    workdir = Path(tempfile.mkdtemp(prefix="conduit-bench-"))
    workdir.chmod(0o755)  # Postgres runs as an unprivileged user when the bench runs as root
    if options.scale:
        return _scale(options, workdir)
    bench = Bench(options, workdir)
    meta: dict[str, object] = {
        **report.machine(),
        "generator": bench.tool,
        "duration_s": options.duration,
        "warmup_s": options.warmup,
        "connections": options.connections,
        "replica": options.replica,
        "started_at": clock(),
        "loadavg_before": os.getloadavg(),
    }
    sys.stderr.write(f"bench: {bench.tool}, {options.duration}s per workload, workdir {workdir}\n")
    try:
        with services(workdir, replica=options.replica) as svc:
            bench.run(svc)
    finally:
        meta["loadavg_after"] = os.getloadavg()
        if bench.rows:
            _report(options, bench, meta)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
