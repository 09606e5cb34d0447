"""What DB_PGBOUNCER_TRANSACTION_MODE costs when Postgres is reached directly:
`python -m bench.pgbouncer_mode_cost`.

With the setting, no statement is cached: every read is parsed (and planned) again, in the same
round trip as it runs. This starts a throwaway Postgres and Redis (devstack), migrates, seeds one
user and article, then serves the app in-process (httpx over ASGI, no network) with the setting
off and on, alternately, and times sequential requests on three reads: one article and its
comments (bare asyncpg connection, `app.repositories.driver`) and a profile (ORM session).
Figures: the median over rounds of wall-clock and app-process CPU microseconds per request
(Postgres' own CPU is not in them). docs/read-replicas.md ("PgBouncer") has them.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient

from app.core.config import Settings
from app.main import create_app
from bench.environment import services


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[AsyncClient]:
    application = create_app(settings)
    async with LifespanManager(application):
        transport = ASGITransport(app=application)
        async with AsyncClient(transport=transport, base_url="http://bench") as http:
            yield http


async def _seed(http: AsyncClient) -> dict[str, str]:
    user = {"username": "bencher", "email": "bencher@example.com", "password": "x" * 12}
    token = (await http.post("/api/users", json={"user": user})).json()["user"]["token"]
    headers = {"Authorization": f"Token {token}"}
    article = {"title": "Measured", "description": "d", "body": "b"}
    made = await http.post("/api/articles", json={"article": article}, headers=headers)
    slug = made.json()["article"]["slug"]
    await http.post(
        f"/api/articles/{slug}/comments", json={"comment": {"body": "c"}}, headers=headers
    )
    return {
        "article": f"/api/articles/{slug}",
        "comments": f"/api/articles/{slug}/comments",
        "profile": "/api/profiles/bencher",
        "token": token,
    }


async def _time(http: AsyncClient, path: str, token: str, requests: int) -> tuple[float, float]:
    headers = {"Authorization": f"Token {token}"}  # signed in: never answered from the cache
    for _ in range(50):
        assert (await http.get(path, headers=headers)).status_code == 200
    started, started_cpu = time.perf_counter(), time.process_time()
    for _ in range(requests):
        await http.get(path, headers=headers)
    wall = (time.perf_counter() - started) / requests * 1e6
    return wall, (time.process_time() - started_cpu) / requests * 1e6


async def measure(env: dict[str, str], rounds: int, requests: int) -> None:
    paths: dict[str, str] = {}
    figures: dict[tuple[bool, str], list[tuple[float, float]]] = {}
    for _ in range(rounds):
        for mode in (False, True):
            settings = Settings(_env_file=None, DB_PGBOUNCER_TRANSACTION_MODE=mode, **env)  # type: ignore[arg-type]
            async with serve(settings) as http:
                if not paths:
                    paths = await _seed(http)
                for name in ("article", "comments", "profile"):
                    timing = await _time(http, paths[name], paths["token"], requests)
                    figures.setdefault((mode, name), []).append(timing)
    for (mode, name), timings in figures.items():
        wall = statistics.median(t[0] for t in timings)
        cpu = statistics.median(t[1] for t in timings)
        label = "on " if mode else "off"
        print(f"setting {label} {name:<9} {wall:8.1f} us wall, {cpu:8.1f} us CPU per request")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="pgbouncer-mode-"))
    workdir.chmod(0o755)
    with services(workdir) as svc:  # Postgres (migrated) and Redis, as `make bench` starts them
        env = {
            "APP_ENV": "test",
            "SECRET_KEY": "bench-secret-key-that-is-long-enough-0123456789",
            "DATABASE_URL": svc.database_url,
            "REDIS_URL": svc.redis_url,
            "RATE_LIMIT_ENABLED": "false",
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "json",
        }
        asyncio.run(measure(env, args.rounds, args.requests))


if __name__ == "__main__":
    main()
