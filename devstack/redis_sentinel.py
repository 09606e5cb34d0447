"""A Sentinel-managed Redis on loopback: one primary, one replica, three Sentinels.

Sentinel mode is `redis-server <conf> --sentinel` (what Debian's `redis-sentinel` package runs),
so Debian's `redis-server` is all it needs. Timings are short so a failover fits in a test: a
primary is considered down after `down_after_ms` without a reply (1 s), and a failover attempt
that stalls is retried after `failover_timeout_ms`.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from devstack.servers import RedisServer, free_port, wait_for_port

QUORUM = 2


class SentinelProcess:
    """One `redis-server sentinel.conf --sentinel` (it rewrites its config file as it learns)."""

    def __init__(self, port: int, workdir: Path, binary: str) -> None:
        self.port = port
        self.workdir = workdir
        self.binary = binary
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, conf: str) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / "sentinel.conf"
        path.write_text(conf)
        self.process = subprocess.Popen(
            [self.binary, str(path), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def client(self, password: str | None = None) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, password=password)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


class SentinelCluster:
    def __init__(
        self,
        workdir: Path,
        master_name: str = "conduit",
        *,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
    ) -> None:
        self.workdir = workdir
        self.master_name = master_name
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        primary_port = free_port()
        self.nodes = [
            RedisServer(primary_port, workdir / "node-a"),
            RedisServer(
                free_port(),
                workdir / "node-b",
                extra_args=["--replicaof", "127.0.0.1", str(primary_port)],
            ),
        ]
        binary = self.nodes[0].binary
        self.sentinels = [
            SentinelProcess(free_port(), workdir / f"sentinel-{i}", binary) for i in range(3)
        ]

    @property
    def sentinel_addresses(self) -> str:
        """The value of REDIS_SENTINELS."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def start(self, timeout: float = 30.0) -> SentinelCluster:
        for node in self.nodes:
            node.start()
        primary = self.nodes[0].port
        for sentinel in self.sentinels:
            sentinel.start(
                f"port {sentinel.port}\n"
                "bind 127.0.0.1\n"
                f"dir {sentinel.workdir}\n"
                f"sentinel monitor {self.master_name} 127.0.0.1 {primary} {QUORUM}\n"
                f"sentinel down-after-milliseconds {self.master_name} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.master_name} {self.failover_timeout_ms}\n"
                f"sentinel parallel-syncs {self.master_name} 1\n"
            )
        self._wait_until_settled(timeout)
        return self

    def _wait_until_settled(self, timeout: float) -> None:
        """Every Sentinel sees the other two and the replica, and the replica is in sync: only
        then can a failover be voted and a replica promoted."""
        deadline = time.monotonic() + timeout
        state: object = None
        while time.monotonic() < deadline:
            try:
                state = [self._view(s) for s in self.sentinels]
                replica = self.nodes[1].port
                link = redis.Redis(port=replica, socket_timeout=2).info("replication")
                if link.get("master_link_status") == "up" and all(
                    others == len(self.sentinels) - 1 and replicas >= 1
                    for others, replicas in state
                ):
                    return
            except redis.RedisError as exc:
                state = exc
            time.sleep(0.1)
        raise TimeoutError(f"the Sentinel cluster did not settle: {state}")

    def _view(self, sentinel: SentinelProcess) -> tuple[int, int]:
        with sentinel.client() as client:
            master = client.sentinel_master(self.master_name)
        return int(master["num-other-sentinels"]), int(master["num-slaves"])

    def primary_port(self) -> int:
        """The primary's port as the first Sentinel that answers sees it."""
        for sentinel in self.sentinels:
            try:
                with sentinel.client() as client:
                    _, port = client.sentinel_get_master_addr_by_name(self.master_name)
                return int(port)
            except redis.RedisError:
                continue
        raise RuntimeError("no Sentinel answered")

    def node(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    def stop(self) -> None:
        processes: list[SentinelProcess | RedisServer] = [*self.sentinels, *self.nodes]
        for process in processes:
            process.stop()


def sentinel_binary_available() -> str | None:
    """The reason Sentinel tests cannot run here, or None."""
    if shutil.which("redis-server") is None:
        return "no redis-server binary: apt-get install redis-server (Sentinel mode is built in)"
    return None
