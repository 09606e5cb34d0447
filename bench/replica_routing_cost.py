"""What routing a GET's reads costs per request: `python -m bench.replica_routing_cost`.

Starts a throwaway Redis (devstack) and times, in one process, the cases of
`app.api.replica_reads.choose_replica`:
- no replica configured: `open_read_connection` tests one attribute and goes on as before;
- anonymous reader with a replica: `ReplicaSet.pick()`, no I/O;
- signed-in reader, rate limiter off or on memory: `pick()` plus the read-your-writes look-up,
  one EXISTS on the pipelined Redis connection (the round trip to a local Redis is most of it);
- signed-in reader, rate limiter on Redis: the key came back with the count (one more GET
  inside the limiter's script, not timed here), so a dictionary look-up.
Each figure is the median of several rounds of N sequential calls: wall-clock and CPU
microseconds per call.
docs/read-replicas.md ("Cost") has the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path
from typing import Any

from app.api.replica_reads import choose_replica
from app.core.config import Settings
from app.db.recent_writes import RecentWriters, writer_key
from app.db.redis import REDIS_ERRORS, RedisService
from app.db.replicas import Replica, ReplicaSet
from app.resilience.circuit_breaker import CircuitBreaker
from bench.timing import per_call
from devstack.servers import RedisServer, free_port


async def measure(redis_url: str, calls: int, rounds: int) -> dict[str, tuple[float, float]]:
    settings = Settings(_env_file=None, REDIS_URL=redis_url)
    redis = RedisService(settings, CircuitBreaker("redis", failure_types=REDIS_ERRORS))
    breaker = CircuitBreaker("replica-0")
    replica = Replica("replica-0", "-", None, breaker, 0.0, None, True)  # type: ignore[arg-type]
    replicas = ReplicaSet([replica], None, max_lag=5, interval=1)  # type: ignore[arg-type]
    replicas._usable = (replica,)  # as a successful check leaves it
    writers = RecentWriters(redis, 7.0)
    unconfigured_app: Any = type("Resources", (), {"replicas": None})()
    resources: Any = type("Resources", (), {"replicas": replicas, "recent_writers": writers})()
    prefetched = {writer_key(42): None}  # what the rate limiter's script read with its count

    async def unconfigured() -> None:
        if unconfigured_app.replicas is not None:
            raise AssertionError

    async def anonymous() -> None:
        await choose_replica(resources, replicas, None)

    async def signed_in() -> None:
        await choose_replica(resources, replicas, 42)

    async def signed_in_prefetched() -> None:
        await choose_replica(resources, replicas, 42, prefetched)

    await writers.wrote_recently(42)  # connect first
    try:
        return {
            "no replica configured": await per_call(unconfigured, calls, rounds),
            "anonymous, replica set": await per_call(anonymous, calls, rounds),
            "signed in, own EXISTS": await per_call(signed_in, calls, rounds),
            "signed in, prefetched": await per_call(signed_in_prefetched, calls, rounds),
        }
    finally:
        await redis.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    server = RedisServer(free_port(), Path(tempfile.mkdtemp(prefix="routing-cost-")))
    server.start()
    try:
        figures = asyncio.run(measure(server.url, args.calls, args.rounds))
    finally:
        server.stop()
    for name, (wall, cpu) in figures.items():
        print(f"{name:<24} {wall:8.2f} us wall, {cpu:8.2f} us CPU per request")


if __name__ == "__main__":
    main()
