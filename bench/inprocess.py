"""Tracing's cost per request, measured inside one process: `python -m bench.inprocess`.

The interleaved wrk runs (bench/interleaved.py) put the copies of the app side by side, but two
identical copies still differ by 2-8 % there: wrk, the kernel and the host share two CPUs with
them. Here every variant is a whole app (`create_app` with production settings, its lifespan
run, real Postgres and Redis) in this one process, and the same cached anonymous article reads
are sent straight to each app's ASGI callable, one at a time, in blocks of 200 that visit the
variants in an order reversed every round. The figure is the event loop thread's CPU time per
request (the median block), so neither the network nor the scheduler is in it, nor the span
export, which runs in the batch processor's thread (the wrk bench's 100 % row shows that
cost). Two identical untraced copies show what is left of the noise (typically under 2 %).

What it cannot show: anything that differs between processes. The SQL instrumentation patches
asyncpg for the whole process once one traced app starts, so the untraced copies here pay for
it too; a cached article runs no SQL, so the figure does not move. Logging is configured per
process too: the last app built (a traced one) sets the trace-id log processor for all, which
does nothing without a current span.

    python -m bench.inprocess [--rounds 100] [--block 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from bench.environment import AppServer, production_env, services
from bench.seed import SeedPlan, seed
from devstack.otlp_receiver import OtlpReceiver


def variants(otlp_url: str) -> dict[str, dict[str, str]]:
    traced = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_url}
    return {
        "off": {},
        "off again": {},
        "on, nothing sampled": {**traced, "OTEL_TRACES_SAMPLER": "parentbased_always_off"},
        "on, 1 % sampled": {
            **traced,
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.01",
        },
    }


def _scope(path: str) -> dict[str, Any]:
    """What uvicorn hands the app for `GET path` from wrk."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench"), (b"accept", b"*/*")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _get(app: FastAPI, path: str) -> None:
    received = False
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError("unreachable")

    async def send(message: Mapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(_scope(path), receive, send)
    if statuses != [200]:
        raise RuntimeError(f"GET {path} answered {statuses}")


async def _measure(
    apps: dict[str, FastAPI], paths: list[str], rounds: int, block: int
) -> dict[str, list[float]]:
    for app in apps.values():  # warm: every body cached, every route's children resolved
        for path in paths:
            await _get(app, path)
    per_request: dict[str, list[float]] = {name: [] for name in apps}
    names = list(apps)
    for round_number in range(rounds):
        for name in names if round_number % 2 == 0 else reversed(names):
            started = time.thread_time()
            for path in paths[:block]:
                await _get(apps[name], path)
            per_request[name].append((time.thread_time() - started) / block * 1e6)
    return per_request


async def _run(
    base: dict[str, str], otlp_url: str, paths: list[str], rounds: int, block: int
) -> dict[str, list[float]]:
    from app.core.config import Settings
    from app.main import create_app

    async with contextlib.AsyncExitStack() as stack:
        apps: dict[str, FastAPI] = {}
        for name, overrides in variants(otlp_url).items():
            app = create_app(Settings(_env_file=None, **{**base, **overrides}))  # type: ignore[arg-type]
            await stack.enter_async_context(LifespanManager(app))
            apps[name] = app
        # The apps' start-up objects out of the collector's sight, as each process does its own.
        gc.collect()
        gc.freeze()
        return await _measure(apps, paths, rounds, block)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.inprocess", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--block", type=int, default=200, help="requests per variant per round")
    options = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="conduit-inprocess-"))
    workdir.chmod(0o755)  # Postgres runs as an unprivileged user when this runs as root
    with services(workdir) as svc:
        env = production_env(svc, workdir, workers=1)
        with AppServer("app.main:app", env, workdir / "seed.log").start("/health") as server:
            seeded = asyncio.run(seed(server.url, SeedPlan()))
        paths = [f"/api/articles/{slug}" for slug in seeded.slugs[: options.block]]
        # The app's own settings only: the rest of the environment is for uvicorn and glibc.
        base = {k: v for k, v in env.items() if not k.startswith(("MALLOC_", "UVICORN_"))}
        # The apps' access-log lines go to stdout: not this report's business.
        with (
            OtlpReceiver(decode=False) as receiver,
            open(os.devnull, "w") as sink,
            contextlib.redirect_stdout(sink),
        ):
            results = asyncio.run(_run(base, receiver.url, paths, options.rounds, options.block))
    untraced = statistics.mean(
        [statistics.median(results["off"]), statistics.median(results["off again"])]
    )
    sys.stderr.write(
        f"cached anonymous article, {options.rounds} rounds of {options.block} requests per "
        "variant, CPU µs per request (median block):\n"
    )
    for name, figures in results.items():
        median = statistics.median(figures)
        sys.stderr.write(f"  {name:20s} {median:6.1f}  {(median / untraced - 1) * 100:+5.1f} %\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
