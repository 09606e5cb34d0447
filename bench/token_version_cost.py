"""What checking a token's version costs a signed-in request: `python -m bench.token_version_cost`.

Token revocation (app/db/token_versions.py) adds to every signed-in request on a route that
does not load the account:
- with the rate limiter on Redis (production): one more GET inside the limiter's script, which
  the request runs anyway, and a dictionary look-up in the route's dependency;
- with the limiter off or on its in-process fallback: a GET of its own on the pipelined Redis
  connection;
- when Redis cannot answer: a primary-key look-up in Postgres.

This starts a throwaway Redis and Postgres (devstack) and times each case in one process:
the limiter's script with and without the extra key (so the difference is what revocation
adds to the round trip every signed-in request makes), the route-side check, and the two
fallbacks. Each figure is the median of several rounds of N sequential calls: wall-clock and
CPU microseconds per call (CPU: this process; Redis' own CPU is read from INFO). docs/security.md
("What it costs") has the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path
from typing import Any

import asyncpg
from limits import parse

from app.core.config import Settings
from app.db.redis import REDIS_ERRORS, RedisService
from app.db.token_versions import TokenVersions, parse_version, version_key
from app.repositories.users import _TOKEN_VERSION
from app.resilience.circuit_breaker import CircuitBreaker
from app.resilience.rate_limit import Rule, _evaluate_in_redis
from bench.environment import services
from bench.timing import per_call


async def _redis_cpu_us(redis: RedisService) -> float:
    info: dict[str, Any] = await redis.run(lambda r: r.info("cpu"))
    return (float(info["used_cpu_sys"]) + float(info["used_cpu_user"])) * 1e6


async def measure(redis_url: str, postgres_dsn: str, calls: int, rounds: int) -> None:
    settings = Settings(_env_file=None, REDIS_URL=redis_url)
    redis = RedisService(settings, CircuitBreaker("redis", failure_types=REDIS_ERRORS))
    versions = TokenVersions(redis, 86400)
    rule = [Rule("default", parse("1000000/minute"))]
    key = version_key(42)
    await versions.publish(42, 1)
    prefetched = {key: b"1"}

    async def script_without() -> None:
        await _evaluate_in_redis(redis, rule, "user:42")

    async def script_with() -> None:
        await _evaluate_in_redis(redis, rule, "user:42", (key,))

    async def route_side() -> None:  # what app.api.deps does with the script's answer
        raw = prefetched.get(key)
        assert parse_version(raw) == 1

    async def own_get() -> None:
        await versions.current(42)

    figures: dict[str, tuple[float, float, float]] = {}
    for name, call in (
        ("limiter script, no extra key", script_without),
        ("limiter script + version key", script_with),
        ("limiter script, no extra key ", script_without),  # again: drift shows here
        ("route-side check (prefetched)", route_side),
        ("own GET (limiter off or in memory)", own_get),
    ):
        before = await _redis_cpu_us(redis)
        wall, cpu = await per_call(call, calls, rounds)
        redis_cpu = (await _redis_cpu_us(redis) - before) / (calls * rounds)
        figures[name] = (wall, cpu, redis_cpu)
    await redis.close()

    # The app's own statement, on an asyncpg connection as the app's driver path runs it.
    connection = await asyncpg.connect(postgres_dsn)
    await connection.execute(
        "INSERT INTO users (email, username, password_hash) "
        "SELECT 'u' || g || '@example.com', 'u' || g, 'x' FROM generate_series(1, 100000) g"
    )
    user_id = await connection.fetchval("SELECT max(id) FROM users")
    statement = await connection.prepare(_TOKEN_VERSION.sql)

    async def postgres() -> None:
        await statement.fetchval(user_id)

    wall, cpu = await per_call(postgres, calls, rounds)
    figures["Postgres look-up (Redis unreachable)"] = (wall, cpu, float("nan"))
    await connection.close()

    print(f"{'case':40} {'wall us':>9} {'app CPU us':>11} {'Redis CPU us':>13}")
    for name, (wall, cpu, redis_cpu) in figures.items():
        print(f"{name:40} {wall:9.1f} {cpu:11.1f} {redis_cpu:13.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="token-cost-"))
    workdir.chmod(0o755)  # Postgres runs as an unprivileged user
    with services(workdir) as running:  # Postgres (migrated) and Redis, as make bench's
        dsn = running.database_url.replace("postgresql+asyncpg://", "postgresql://")
        asyncio.run(measure(running.redis_url, dsn, args.calls, args.rounds))


if __name__ == "__main__":
    main()
