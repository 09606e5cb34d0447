"""Which S3 client the upload storage uses, by measurement: obstore vs aiobotocore.

Run by hand: `.venv/bin/python -m bench.s3_clients` (about a minute). It starts moto's standalone
server (an emulator, see devstack/s3.py) and, for each client, a fresh Python process that:

- imports the client and builds it (wall time, and resident memory added);
- PUTs a 100 KB and a 10 MB image from a file on disk (client-process CPU per PUT, user+system,
  all threads: obstore's work happens on Rust threads, so `time.process_time` counts it);
- reports the peak RSS above the pre-upload baseline while putting the 10 MB file;
- HEADs an object N times (median and p95 latency).

The server's CPU is not counted: it runs in its own process. Figures are printed as a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil

BUCKET = "bench-uploads"
SMALL = 100 * 1024
LARGE = 10 * 1024 * 1024
PUT_ROUNDS = {SMALL: 40, LARGE: 6}
HEAD_ROUNDS = 200
ATTRIBUTES = {"Content-Type": "image/png", "Cache-Control": "public, max-age=31536000, immutable"}


class PeakRss:
    """Highest RSS of this process, sampled every 5 ms while the block runs."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def rss() -> int:
    return int(psutil.Process().memory_info().rss)


class ObstoreClient:
    name = "obstore"

    def __init__(self, endpoint: str, multipart: bool, handle: bool = False) -> None:
        # use_multipart=None lets obstore choose (multipart above chunk_size, 5 MB); `handle`
        # passes an open file instead of its path.
        import obstore
        from obstore.store import S3Store

        self.obstore = obstore
        self.multipart = multipart
        self.handle = handle
        self.store = S3Store(
            BUCKET,
            endpoint=endpoint,
            region="us-east-1",
            access_key_id="bench",
            secret_access_key="bench-secret",
            client_options={"allow_http": True},
        )

    async def put(self, key: str, path: Path) -> None:
        mode = None if self.multipart else False
        if not self.handle:
            await self.obstore.put_async(
                self.store, key, path, attributes=ATTRIBUTES, use_multipart=mode
            )
            return
        with path.open("rb") as body:
            await self.obstore.put_async(
                self.store, key, body, attributes=ATTRIBUTES, use_multipart=mode
            )

    async def head(self, key: str) -> None:
        await self.obstore.head_async(self.store, key)

    async def close(self) -> None:
        return None


class AiobotocoreClient:
    name = "aiobotocore"

    def __init__(self, endpoint: str) -> None:
        from aiobotocore.session import get_session

        self.endpoint = endpoint
        self.session = get_session()
        self.client: Any = None

    async def open(self) -> None:
        self.context = self.session.create_client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench-secret",
        )
        self.client = await self.context.__aenter__()

    async def put(self, key: str, path: Path) -> None:
        with path.open("rb") as body:
            await self.client.put_object(
                Bucket=BUCKET,
                Key=key,
                Body=body,
                ContentType=ATTRIBUTES["Content-Type"],
                CacheControl=ATTRIBUTES["Cache-Control"],
            )

    async def head(self, key: str) -> None:
        await self.client.head_object(Bucket=BUCKET, Key=key)

    async def close(self) -> None:
        await self.context.__aexit__(None, None, None)


async def cpu_per_call(rounds: int, call: Callable[[int], Awaitable[None]]) -> float:
    await call(-1)  # warm: connection, credentials, first-use imports
    started = time.process_time()
    for index in range(rounds):
        await call(index)
    return (time.process_time() - started) / rounds


async def measure(client_name: str, endpoint: str) -> dict[str, Any]:
    """One client, measured in this (fresh) process."""
    before_rss = rss()
    started = time.perf_counter()
    client: ObstoreClient | AiobotocoreClient
    if client_name == "aiobotocore":
        client = AiobotocoreClient(endpoint)
        await client.open()
    else:
        # "-single": one PUT request; "-auto": obstore's choice (multipart above 5 MB);
        # "-handle": an open file object instead of a path, obstore's choice.
        client = ObstoreClient(
            endpoint,
            multipart=client_name != "obstore-single",
            handle=client_name == "obstore-handle",
        )
    result: dict[str, Any] = {
        "client": client_name,
        "import_and_build_ms": (time.perf_counter() - started) * 1000,
    }
    result["import_rss_mb"] = (rss() - before_rss) / 2**20
    with tempfile.TemporaryDirectory() as scratch:
        files = {}
        for size in (SMALL, LARGE):
            files[size] = Path(scratch) / f"{size}.bin"
            files[size].write_bytes(os.urandom(size))
        # First, before any large put has grown the heap: the peak while a 10 MB file streams.
        await client.put("warm.png", files[SMALL])
        baseline = rss()
        with PeakRss() as peak:
            await client.put("peak.png", files[LARGE])
        result["peak_rss_above_baseline_mb_10m"] = max(0, peak.peak - baseline) / 2**20
        for size, label in ((SMALL, "cpu_ms_put_100k"), (LARGE, "cpu_ms_put_10m")):
            path = files[size]

            async def put(index: int, path: Path = path, size: int = size) -> None:
                await client.put(f"{size}-{index}.png", path)

            result[label] = await cpu_per_call(PUT_ROUNDS[size], put) * 1000
        latencies = []
        for _ in range(HEAD_ROUNDS):
            began = time.perf_counter()
            await client.head(f"{SMALL}-0.png")
            latencies.append((time.perf_counter() - began) * 1000)
        latencies.sort()
        result["head_ms_median"] = statistics.median(latencies)
        result["head_ms_p95"] = latencies[int(len(latencies) * 0.95)]
    await client.close()
    return result


def run_worker(client_name: str, endpoint: str) -> dict[str, Any]:
    output = subprocess.run(
        [sys.executable, "-m", "bench.s3_clients", "--worker", client_name, "--endpoint", endpoint],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    ).stdout
    value: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return value


COLUMNS = [
    ("import_and_build_ms", "import+build ms"),
    ("import_rss_mb", "import RSS MB"),
    ("cpu_ms_put_100k", "CPU ms/PUT 100KB"),
    ("cpu_ms_put_10m", "CPU ms/PUT 10MB"),
    ("peak_rss_above_baseline_mb_10m", "peak RSS +MB (10MB put)"),
    ("head_ms_median", "HEAD ms p50"),
    ("head_ms_p95", "HEAD ms p95"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker")
    parser.add_argument("--endpoint")
    parser.add_argument("--repeat", type=int, default=2, help="fresh processes per client")
    args = parser.parse_args()
    if args.worker:
        sys.stdout.write(json.dumps(asyncio.run(measure(args.worker, args.endpoint))) + "\n")
        return

    from devstack.s3 import MotoS3Server

    with MotoS3Server() as server:
        server.create_bucket(BUCKET)
        rows = []
        for _ in range(args.repeat):
            for name in ("obstore-single", "obstore-auto", "obstore-handle", "aiobotocore"):
                rows.append(run_worker(name, server.url))
    header = f"{'client':<18}" + "".join(f"{title:>25}" for _, title in COLUMNS)
    sys.stdout.write(header + "\n")
    for row in rows:
        cells = "".join(f"{row[key]:>25.2f}" for key, _ in COLUMNS)
        sys.stdout.write(f"{row['client']:<18}{cells}\n")


if __name__ == "__main__":
    main()
