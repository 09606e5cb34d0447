"""Issue 15's migrations, run on the 1M set while the release before them serves it under load.

    python -m bench.scale.migrate_online [--seconds-before 10] [--connections 32]

What it does, on a copy of the loaded 1M database (`CREATE DATABASE ... TEMPLATE`, so the
cached set is left as it is):

1. migrates the copy down to the schema of the release before issue 15 (5c1d7e2a9f40);
2. serves it with that release's code (a `git worktree` of OLD_RELEASE, 1 worker, production
   settings, no Redis: every request reaches Postgres);
3. drives it with two wrk loads at once: signed-in reads (lists, a tag, articles, profiles,
   the feed) and the write mix (comments, favourites, unfavourites as 200 users), for
   `--seconds-before` seconds with no migration (what that release fails on its own), then
   again from the first migration through every one of the issue, one revision at a time
   (`alembic upgrade <revision>` with this checkout's code), to a few seconds after;
4. prints each revision's duration, what the load saw (requests, failures, p99), and whether
   `app.db.recount` finds every maintained count exact afterwards.

The expand rule is what is tested: the old release keeps serving reads and writes while the
columns, triggers, backfills and indexes arrive, and its writes during the backfill are counted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from bench import load as loads
from bench.environment import ROOT, AppServer, Services, production_env
from bench.scale import loader, postgres
from bench.scale.runner import prepare
from bench.scale.workloads import sign_in
from devstack.servers import PostgresServer

# A commit and Alembic revision ids (hex names, not secrets).
OLD_RELEASE = "2bea486"  # the commit before the first migration
OLD_HEAD = "5c1d7e2a9f40"  # pragma: allowlist secret
REVISIONS = (
    "8e3f0a6b2c11",  # pragma: allowlist secret
    "b7d41c9e0a52",  # pragma: allowlist secret
    "c3a9e5f17d08",  # pragma: allowlist secret
    "e4b8d2f6a913",  # pragma: allowlist secret
)
COPY = "conduit_scale_1m_migration"
WRITERS = 200


@dataclass
class Step:
    revision: str
    seconds: float


def _alembic(url: str, *args: str, cwd: Path = ROOT) -> None:
    subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=cwd,
        env={**os.environ, "DATABASE_URL": url, "LOG_FORMAT": "json"},
        check=True,
        capture_output=True,
    )


@contextlib.contextmanager
def _old_release(workdir: Path) -> Iterator[Path]:
    tree = workdir / "old-release"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(tree), OLD_RELEASE],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    try:
        yield tree
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True
        )


def _copy(server: PostgresServer) -> str:
    server.query(f"DROP DATABASE IF EXISTS {COPY}")
    started = time.monotonic()
    server.query(f"CREATE DATABASE {COPY} TEMPLATE {postgres.database('1m')}")
    sys.stderr.write(f"  copied the 1M database in {time.monotonic() - started:.1f}s\n")
    return server.url(COPY)


async def _writer_tokens(base_url: str, usernames: list[str], password: str) -> list[str]:
    import httpx

    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        tokens = []
        for name in usernames[:WRITERS]:
            body = {"user": {"email": f"{name}@scale.example", "password": password}}
            response = await http.post("/api/users/login", json=body)
            response.raise_for_status()
            tokens.append(response.json()["user"]["token"])
    return tokens


async def _mismatches(url: str) -> int:
    connection = await asyncpg.connect(loader.asyncpg_url(url))
    try:
        found = await loader._app_recount_mismatches(connection)
    finally:
        await connection.close()
    return -1 if found is None else found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale.migrate_online")
    parser.add_argument("--seconds-before", type=float, default=30.0)
    parser.add_argument("--seconds-after", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    options = parser.parse_args(argv)
    if loads.generator() != "wrk":
        raise SystemExit("this drives the app with wrk (bench/wrk/workload.lua): install wrk")
    workdir = Path(tempfile.mkdtemp(prefix="conduit-migrate-"))
    workdir.chmod(0o755)
    try:
        with postgres.cluster() as server, _old_release(workdir) as tree:
            ids = prepare(server, "1m", reload=False).manifest.identities
            url = _copy(server)
            started = time.monotonic()
            _alembic(url, "downgrade", OLD_HEAD)
            sys.stderr.write(f"  down to {OLD_HEAD} in {time.monotonic() - started:.1f}s\n")
            env = production_env(Services(url, "", server), workdir, workers=1)
            del env["REDIS_URL"]
            app = AppServer("app.main:app", env, workdir / "old-app.log", cwd=tree)
            with app.start("/health") as old:
                steps, load = _migrate_under_load(server, old, ids, url, workdir, options)
            mismatches = asyncio.run(_mismatches(url))
            server.query(f"DROP DATABASE IF EXISTS {COPY}")
        _report(steps, load, mismatches)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


@dataclass
class LoadFigures:
    reads: loads.Measured
    writes: loads.Measured


@dataclass
class Phases:
    before: LoadFigures  # the same load for --seconds-before, no migration running
    during: LoadFigures  # from the first migration's start to --seconds-after past the last


def _migrate_under_load(
    server: PostgresServer,
    app: AppServer,
    ids: dict[str, object],
    url: str,
    workdir: Path,
    options: argparse.Namespace,
) -> tuple[list[Step], Phases]:
    password = str(ids["password"])
    usernames = [str(name) for name in ids["usernames"]]  # type: ignore[attr-defined]
    slugs = [str(slug) for slug in ids["slugs"]]  # type: ignore[attr-defined]
    reader = sign_in(app.url, ids)
    tokens = asyncio.run(_writer_tokens(app.url, usernames, password))
    paths = workdir / "reads.txt"
    list_page = "/api/articles?limit=20"
    reads = [
        list_page,
        f"{list_page}&tag={ids['popular_tag']}",
        "/api/articles/feed?limit=20",
        *(f"/api/articles/{slug}" for slug in slugs[:200]),
        *(f"/api/profiles/{name}" for name in usernames[:50]),
    ]
    paths.write_text("\n".join(reads) + "\n")
    (workdir / "slugs.txt").write_text("\n".join(slugs[:500]) + "\n")
    (workdir / "tokens.txt").write_text("\n".join(tokens) + "\n")
    half = max(options.connections // 2, 1)
    read_load = loads.Load("paths", args=(str(paths), reader), connections=half)
    write_load = loads.Load(
        "write", args=(str(workdir / "slugs.txt"), str(workdir / "tokens.txt")), connections=half
    )
    # The old release under the load alone first: what it fails without any migration.
    read_run = loads.start(app.url, read_load, options.seconds_before, "wrk", workdir)
    write_run = loads.start(app.url, write_load, options.seconds_before, "wrk", workdir)
    before = LoadFigures(read_run.result(), write_run.result())
    # Long enough for any migration; stopped (SIGINT: wrk prints its figures) when they end.
    budget = 3600.0
    read_run = loads.start(app.url, read_load, budget, "wrk", workdir)
    write_run = loads.start(app.url, write_load, budget, "wrk", workdir)
    steps: list[Step] = []
    try:
        time.sleep(1.0)  # every connection open and busy
        for revision in REVISIONS:
            started = time.monotonic()
            _alembic(url, "upgrade", revision)
            steps.append(Step(revision, time.monotonic() - started))
            sys.stderr.write(f"  {revision}: {steps[-1].seconds:.1f}s under load\n")
        time.sleep(options.seconds_after)
    finally:
        read_run.interrupt()
        write_run.interrupt()
    return steps, Phases(before, LoadFigures(read_run.result(), write_run.result()))


def _report(steps: list[Step], load: Phases, mismatches: int) -> None:
    lines = ["revision      seconds under load"]
    lines += [f"{step.revision}  {step.seconds:7.1f}" for step in steps]
    lines.append(f"all           {sum(step.seconds for step in steps):7.1f}")
    for phase, figures_of in (("before", load.before), ("during", load.during)):
        for name, figures in (("reads", figures_of.reads), ("writes", figures_of.writes)):
            failed = figures.non2xx + figures.socket_errors
            lines.append(
                f"{phase} {name:6}: {figures.requests:,} requests in {figures.seconds:.0f}s "
                f"({figures.rps:.0f}/s), {failed} failed ({figures.non2xx} non-2xx, "
                f"{figures.socket_errors} socket errors), p50 {figures.p50_ms:.1f} ms, "
                f"p99 {figures.p99_ms:.1f} ms"
            )
    lines.append(f"app.db.recount afterwards: {mismatches} counts wrong")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
