"""`python -m bench.run --scale 1m`: the same app build serving a small and a large set side by
side, and whether each read costs the same on both (issue 15).

One Postgres cluster (bench/scale/postgres.py) holds one database per size, loaded once by
bench/scale/loader.py and reused; one 1-worker app serves each database, with the bench's
production settings but without Redis, so every read reaches Postgres (with Redis, the
anonymous lists, articles, profiles and the tags would come from the cache and say nothing about
the data size). Each workload visits the apps in interleaved slices (bench/interleaved.py), so
the host's speed drift falls on every size alike; Postgres CPU and pg_stat_statements time are
read around every slice. Then every workload's request is sent once more to each app with
auto_explain on, for the plans of the statements it really runs.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import interleaved
from bench.environment import AppServer, Services, production_env
from bench.report import Row, machine
from bench.scale import loader, postgres, report
from bench.scale.plan import SIZES, SMALL
from bench.scale.workloads import READS, ScaleRead, first_request, load_for, sign_in

CURVE = ("500", "10k", "100k", "1m")
ROUNDS = 3  # slices per set and workload: --duration 15 gives 5 s slices


def sizes_of(argument: str) -> list[str]:
    """`1m` -> [500, 1m]; `10k,100k,1m` or `curve` -> every size given, 500 first."""
    wanted = CURVE if argument == "curve" else [s.strip().lower() for s in argument.split(",")]
    unknown = [size for size in wanted if size not in SIZES]
    if unknown:
        raise SystemExit(f"--scale: unknown size {unknown}; sizes: {', '.join(SIZES)} or curve")
    return [size for size in SIZES if size in wanted or size == SMALL]


@dataclass(frozen=True)
class ScaleOptions:
    sizes: list[str]
    duration: float
    connections: int
    rounds: int
    reload: bool
    only: frozenset[str] | None
    results: Path
    data: Path = postgres.DATA


@dataclass
class Prepared:
    manifest: loader.Manifest
    migrate_s: float
    url: str


def prepare(server: Any, size: str, reload: bool) -> Prepared:
    name = postgres.database(size)
    server.create_database(name)
    url = server.url(name)
    started = time.monotonic()
    loader.migrate(url)
    migrated = time.monotonic() - started
    manifest = loader.load_sync(url, size, SIZES[size], reload=reload)
    state = "reused" if manifest.reused else "loaded"
    sys.stderr.write(
        f"  {size}: {state} (load {manifest.seconds:.1f}s), alembic upgrade head {migrated:.1f}s\n"
    )
    return Prepared(manifest, migrated, url)


def _app_env(server: Any, url: str, workdir: Path) -> dict[str, str]:
    env = production_env(Services(url, "", server), workdir, workers=1)
    del env["REDIS_URL"]  # no cache: every read reaches Postgres (see the docstring)
    return env


def run(options: ScaleOptions, workdir: Path, tool: str) -> int:
    if tool != "wrk":
        raise SystemExit("--scale drives the apps with wrk (bench/wrk/workload.lua): install wrk")
    reads = [r for r in READS if options.only is None or r.name in options.only]
    results: dict[str, Any] = {
        "meta": {
            **machine(),
            "generator": tool,
            "duration_s": options.duration,
            "rounds": options.rounds,
            "connections": options.connections,
            "sizes": options.sizes,
            "started_at": time.time(),
        },
        "sets": {},
        "rows": [],
        "plans": [],
    }
    sys.stderr.write(f"scale: sizes {', '.join(options.sizes)}, data in {options.data}\n")
    with postgres.cluster(options.data) as server, contextlib.ExitStack() as stack:
        prepared = {size: prepare(server, size, options.reload) for size in options.sizes}
        for size, ready in prepared.items():
            results["sets"][size] = {
                **asdict(ready.manifest),
                "migrate_s": ready.migrate_s,
                "database": postgres.database(size),
            }
            named = ready.manifest.identities.items()
            results["sets"][size]["identities"] = {
                k: v for k, v in named if k not in ("slugs", "usernames")
            }
        apps: dict[str, AppServer] = {}
        for size, ready in prepared.items():
            env = _app_env(server, ready.url, workdir)
            app = AppServer("app.main:app", env, workdir / f"app-scale-{size}.log")
            apps[size] = stack.enter_context(app.start("/health"))
        ids = {size: ready.manifest.identities for size, ready in prepared.items()}
        tokens = {size: sign_in(app.url, ids[size]) for size, app in apps.items()}
        meter = postgres.PostgresMeter(server, {s: postgres.database(s) for s in apps})
        variants = list(apps.items())
        for read in reads:
            own = {
                size: load_for(read, ids[size], tokens[size], workdir, size, options.connections)
                for size in apps
            }
            rows = interleaved.measure(
                variants,
                own[SMALL],
                seconds=options.duration,
                rounds=options.rounds,
                tool=tool,
                workdir=workdir,
                load_for=own,
                meter=meter,
            )
            for row in rows:
                results["rows"].append(_row(read, row))
                sys.stderr.write(_progress(read, row))
        for read in reads:
            for size, app in apps.items():
                results["plans"] += _plans(server, app, read, ids[size], tokens[size], size)
    results["meta"]["finished_at"] = time.time()
    _write(options, results)
    return 0


def _row(read: ScaleRead, row: Row) -> dict[str, Any]:
    requests = row.requests or 1
    return {
        "workload": read.name,
        "size": row.workload,
        "requests": row.requests,
        "rps": row.rps,
        "p50_ms": row.p50_ms,
        "p99_ms": row.p99_ms,
        "errors": row.non2xx + row.socket_errors,
        "non2xx": row.non2xx,
        "socket_errors": row.socket_errors,
        "app_cpu_ms_per_request": row.cpu_ms_per_request,
        "pg_cpu_ms_per_request": row.extra.get("pg_cpu_s", 0.0) * 1000 / requests,
        "pg_exec_ms_per_request": row.extra.get("pg_exec_s", 0.0) * 1000 / requests,
    }


def _progress(read: ScaleRead, row: Row) -> str:
    figures = _row(read, row)
    return (
        f"  {read.name} @ {row.workload}: {row.rps:,.0f} req/s, p99 {row.p99_ms:.1f} ms, "
        f"PG {figures['pg_cpu_ms_per_request']:.3f} ms/req, errors {figures['errors']} "
        f"(non-2xx {row.non2xx}, socket {row.socket_errors})\n"
    )


def _plans(
    server: Any, app: AppServer, read: ScaleRead, ids: dict[str, Any], token: str, size: str
) -> list[dict[str, Any]]:
    path, headers = first_request(read, ids, token)
    with postgres.explaining(server) as found:
        status = httpx.get(app.url + path, headers=headers, timeout=120).status_code
    return [
        {"workload": read.name, "size": size, "status": status, **asdict(plan)} for plan in found
    ]


def _write(options: ScaleOptions, results: dict[str, Any]) -> None:
    text = report.text(results)
    sys.stdout.write(f"\n{text}\n")
    options.results.parent.mkdir(parents=True, exist_ok=True)
    json_path = options.results.with_name(options.results.name + "-scale.json")
    json_path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    md_path = options.results.with_name(options.results.name + "-scale.md")
    md_path.write_text(report.markdown(results) + "\n")
    sys.stdout.write(f"\nresults: {json_path}, {md_path.name}\n")
