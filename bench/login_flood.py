"""What a login flood costs everyone else: `python -m bench.login_flood`.

One uvicorn worker (production settings, its own Postgres and Redis, bench/environment.py;
every per-client limit raised, so only the per-account limit and the hashing queue act) is
sent, for each scenario, a flood of wrong-password logins from FLOODERS concurrent connections
in a process of their own, while READERS connections in this process read `GET /api/tags` (the
cached tag list: CPU and the event loop only) and `GET /api/user` (a signed-in read: a pooled
Postgres connection) one after another. Printed per scenario: the readers' p50/p99, the
worker's peak RSS, and how the logins were answered.

- baseline: readers only;
- one account: every attempt names the same registered email (credential stuffing against one
  account): after RATE_LIMIT_LOGIN_ACCOUNT failures every attempt is a 429 that costs no hash;
- distinct emails: every attempt names a new email (spraying), so no account limit helps: the
  hashing bound is what acts (2 Argon2 hashes at a time, HASHING_MAX_WAITING waiting, then 503).

The flood and the readers share the host's CPUs with the worker, Postgres and Redis, so the
latencies are upper bounds of what the worker alone would show; compare rows, not hosts.

    python -m bench.login_flood [--seconds 10] [--flooders 200] [--readers 4]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.environment import AppServer, RssSampler, production_env, services

PASSWORD = "correct-horse-battery"


@dataclass
class Row:
    scenario: str
    tags_ms: tuple[float, float]  # p50, p99
    user_ms: tuple[float, float]
    peak_rss_mb: float
    logins: Counter[str]
    seconds: float
    failed_reads: int  # readers' answers other than 200 (a 503 when the pool ran dry)


def quantiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return round(cuts[49], 1), round(cuts[98], 1)


async def _flood(url: str, email: str | None, flooders: int, seconds: float) -> Counter[str]:
    """How the logins were answered: "401", "429", "503 service_busy" (the envelope's code
    tells a full hashing queue from a dry database pool, "503 database_unavailable")."""
    statuses: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=flooders, max_keepalive_connections=flooders)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:

        async def one() -> None:
            while time.monotonic() < deadline:
                target = email or f"spray-{uuid.uuid4().hex}@example.com"
                body = {"user": {"email": target, "password": "not-the-password"}}
                try:
                    response = await http.post("/api/users/login", json=body)
                except httpx.HTTPError:
                    statuses["no answer"] += 1
                    continue
                status = response.status_code
                code = response.json().get("code") if status >= 500 else None
                statuses[f"{status} {code}" if code else str(status)] += 1

        await asyncio.gather(*(one() for _ in range(flooders)))
    return statuses


def _flood_process(
    url: str,
    email: str | None,
    flooders: int,
    seconds: float,
    out: multiprocessing.Queue[dict[str, int]],
) -> None:
    out.put(dict(asyncio.run(_flood(url, email, flooders, seconds))))


async def _read(
    http: httpx.AsyncClient, path: str, token: str, seconds: float
) -> tuple[list[float], int]:
    """Latencies of every read (ms) and how many were not a 200."""
    latencies, failed = [], 0
    headers = {"Authorization": f"Token {token}"}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        response = await http.get(path, headers=headers if path == "/api/user" else None)
        latencies.append((time.perf_counter() - started) * 1000)
        failed += response.status_code != 200
    return latencies, failed


async def _readers(
    url: str, token: str, readers: int, seconds: float
) -> tuple[dict[str, list[float]], int]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        paths = ["/api/tags", "/api/user"] * readers
        results = await asyncio.gather(*(_read(http, path, token, seconds) for path in paths))
    merged: dict[str, list[float]] = {"/api/tags": [], "/api/user": []}
    for path, (latencies, _) in zip(paths, results, strict=True):
        merged[path] += latencies
    return merged, sum(failed for _, failed in results)


def run_scenario(
    app: AppServer, scenario: str, email: str | None, token: str, args: argparse.Namespace
) -> Row:
    flood: multiprocessing.Process | None = None
    out: multiprocessing.Queue[dict[str, int]] = multiprocessing.Queue()
    with RssSampler(app, interval=0.05) as rss:
        if scenario != "baseline":
            flood = multiprocessing.Process(
                target=_flood_process, args=(app.url, email, args.flooders, args.seconds, out)
            )
            flood.start()
            time.sleep(1)  # the flood reaches its steady state before the readers start
        read, failed_reads = asyncio.run(_readers(app.url, token, args.readers, args.seconds - 1))
        logins: Counter[str] = Counter()
        if flood is not None:
            logins = Counter(out.get(timeout=120))
            flood.join()
    return Row(
        scenario,
        quantiles(read["/api/tags"]),
        quantiles(read["/api/user"]),
        round(rss.peak_bytes / 2**20, 1),
        logins,
        args.seconds,
        failed_reads,
    )


def register(url: str, name: str) -> tuple[str, str]:
    email = f"{name}@example.com"
    user = {"username": name, "email": email, "password": PASSWORD}
    response = httpx.post(f"{url}/api/users", json={"user": user}, timeout=30)
    response.raise_for_status()
    return email, str(response.json()["user"]["token"])


def report(rows: list[Row], args: argparse.Namespace) -> str:
    lines = [
        f"one worker; {args.flooders} flooding connections; {args.readers} readers per path",
        "| scenario | GET /api/tags p50 / p99 ms | GET /api/user p50 / p99 ms "
        "| reads not 200 | worker peak RSS MB | logins/s | login answers |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        total = sum(row.logins.values())
        answers = ", ".join(f"{status}: {n}" for status, n in sorted(row.logins.items())) or "-"
        lines.append(
            f"| {row.scenario} | {row.tags_ms[0]} / {row.tags_ms[1]} "
            f"| {row.user_ms[0]} / {row.user_ms[1]} | {row.failed_reads} | {row.peak_rss_mb} "
            f"| {round(total / row.seconds)} | {answers} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--flooders", type=int, default=200)
    parser.add_argument("--readers", type=int, default=4)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="conduit-bench-login-"))
    workdir.chmod(0o755)
    rows = []
    with services(workdir) as svc:
        env = production_env(svc, workdir, workers=1)
        with AppServer("app.main:app", env, workdir / "app.log").start("/health") as app:
            victim, _ = register(app.url, "victim")
            _, reader_token = register(app.url, "reader")
            httpx.get(f"{app.url}/api/tags", timeout=30).raise_for_status()  # cached from now
            for scenario, email in (
                ("baseline", None),
                ("one account", victim),
                ("distinct emails", None),
            ):
                rows.append(run_scenario(app, scenario, email, reader_token, args))
    print(report(rows, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
