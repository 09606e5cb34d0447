"""What the bench runs against: its own Postgres and Redis, the migrated schema, and uvicorn
processes whose CPU time and memory it reads with psutil.

Everything listens on 127.0.0.1 and is stopped when the bench ends, whatever happened.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from devstack.postgres_replica import PostgresReplica
from devstack.servers import PostgresServer, RedisServer, free_port

ROOT = Path(__file__).resolve().parents[1]
DATABASE = "conduit_bench"
# High enough that no workload of the run is ever limited, low enough to stay realistic work
# for the limiter: every request is still counted in Redis.
RAISED_LIMIT = "10000000/minute"


@dataclass
class Services:
    database_url: str
    redis_url: str
    postgres: PostgresServer  # to stop and start it under load (bench/slo_plot.py's outage)
    replica_url: str | None = None  # `--replica`: a streaming replica serving the GET reads


@contextmanager
def services(workdir: Path, *, replica: bool = False) -> Iterator[Services]:
    postgres = PostgresServer(workdir / "pg" / "data", free_port())
    redis = RedisServer(free_port(), workdir / "redis")
    standby = PostgresReplica(workdir / "replica" / "data", free_port(), postgres)
    try:
        postgres.start()
        postgres.create_database(DATABASE)
        redis.start()
        url = postgres.url(DATABASE)
        subprocess.run(
            [sys.executable, "-m", "alembic", "upgrade", "head"],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": url, "LOG_FORMAT": "json"},
            check=True,
            capture_output=True,
        )
        replica_url = None
        if replica:  # started as the tests start theirs (pg_basebackup -R), once migrated
            standby.start()
            standby.wait_streaming()
            replica_url = standby.url(DATABASE)
        yield Services(url, redis.url, postgres, replica_url)
    finally:
        redis.stop()
        if standby.initialised():
            standby.stop("immediate")
        postgres.stop("immediate")


MALLOC_ENV = {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "1048576"}
IMAGE_KEEP_ALIVE = "75"


def production_env(services: Services, workdir: Path, *, workers: int) -> dict[str, str]:
    """Production settings, JSON logs to a file, metrics on, every rate limit raised."""
    env = {
        "APP_ENV": "production",
        "SECRET_KEY": secrets.token_hex(32),
        "DATABASE_URL": services.database_url,
        "REDIS_URL": services.redis_url,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "METRICS_TOKEN": secrets.token_hex(16),
        "RATE_LIMIT_ENABLED": "true",
        "RATE_LIMIT_DEFAULT": RAISED_LIMIT,
        "RATE_LIMIT_WRITE": RAISED_LIMIT,
        "RATE_LIMIT_LOGIN": RAISED_LIMIT,
        "RATE_LIMIT_REGISTER": RAISED_LIMIT,
        # A pool of its own for every connection the load keeps busy, and no overflow: an
        # overflow connection is opened for a burst and closed when it is returned, so at
        # sustained concurrency above the pool size (24 + 8 before) nearly every request paid
        # for a new Postgres connection (fork, TLS probe, auth, a cold statement cache): ~5 %
        # more CPU per list, and p99 139 ms instead of 53 on an article. See docs/performance.md.
        "DB_POOL_SIZE": "32",
        "DB_MAX_OVERFLOW": "0",
        "UPLOAD_DIR": str(workdir / "uploads"),
        "SHUTDOWN_DRAIN_SECONDS": "0",
        "SHUTDOWN_GRACE_SECONDS": "5",
        # The image's glibc malloc settings (Dockerfile ENV), so the bench measures what runs.
        **MALLOC_ENV,
        # And its keep-alive: longer than a proxy's pooled connections (bench/proxy_hop.py).
        "UVICORN_TIMEOUT_KEEP_ALIVE": IMAGE_KEEP_ALIVE,
    }
    if services.replica_url is not None:
        env["DATABASE_REPLICA_URLS"] = services.replica_url
        env["DATABASE_REPLICA_POOL_SIZE"] = env["DB_POOL_SIZE"]  # the reads move there
        env["DATABASE_REPLICA_MAX_OVERFLOW"] = env["DB_MAX_OVERFLOW"]  # the same churn to avoid
    if workers > 1:
        metrics_dir = workdir / f"prometheus-{workers}"
        metrics_dir.mkdir(parents=True, exist_ok=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    return env


class AppServer:
    """`uvicorn <target> --host 127.0.0.1 --port P [--workers N]`, stdout to a log file."""

    def __init__(
        self,
        target: str,
        env: Mapping[str, str],
        log_path: Path,
        *,
        workers: int = 1,
        cwd: Path = ROOT,
    ) -> None:
        self.target = target
        self.cwd = cwd  # whose code it serves: this checkout, or another release's tree
        self.port = free_port()
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.workers = workers
        self.process: subprocess.Popen[bytes] | None = None
        self._log: object | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_path: str, timeout: float = 60.0) -> AppServer:
        command = [
            sys.executable, "-m", "uvicorn", self.target,
            "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log",
        ]  # fmt: skip
        if self.workers > 1:  # one worker: the plain command, the server is this process
            command += ["--workers", str(self.workers)]
        log = self.log_path.open("ab")
        self._log = log
        self.process = subprocess.Popen(
            command, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.target} exited; see {self.log_path}")
            try:
                ready = httpx.get(self.url + ready_path, timeout=1.0).status_code == 200
                if ready and len(self.worker_processes()) >= self.workers:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.target} did not become ready; see {self.log_path}")

    def worker_processes(self) -> list[psutil.Process]:
        """The processes that serve requests (uvicorn's supervisor excluded with --workers)."""
        assert self.process is not None
        root = psutil.Process(self.process.pid)
        if self.workers == 1:
            return [root]
        # uvicorn spawns workers through multiprocessing; its resource tracker is not one.
        return [child for child in root.children() if "spawn_main" in " ".join(child.cmdline())]

    def all_processes(self) -> list[psutil.Process]:
        assert self.process is not None
        root = psutil.Process(self.process.pid)
        return [root, *root.children(recursive=True)]

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self.all_processes():
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]

    def __enter__(self) -> AppServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


class RssSampler:
    """Peak resident memory of each serving process, sampled in a thread during a run."""

    def __init__(self, server: AppServer, interval: float = 0.2) -> None:
        self.server = server
        self.interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def _sample(self) -> None:
        for proc in self.server.worker_processes():
            try:
                self.peak_bytes = max(self.peak_bytes, proc.memory_info().rss)
            except psutil.NoSuchProcess:
                continue

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
