"""The scale run's Postgres: one cluster kept under .data/bench-scale (a loaded 1M set takes
minutes to make, so it is reused from run to run), with one database per size, and what the run
reads from it: the CPU of every Postgres process, `pg_stat_statements`' execution time per
database, and the plans of the statements a request really runs (`auto_explain`).
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from devstack.servers import PostgresServer, free_port

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / ".data" / "bench-scale"
# On top of devstack's flags (fsync off and so on, as every bench cluster has them): memory
# for a production-size set, fewer checkpoints while loading, and the two extensions.
SETTINGS = {
    "shared_preload_libraries": "pg_stat_statements,auto_explain",
    "shared_buffers": "2GB",
    "effective_cache_size": "8GB",
    "maintenance_work_mem": "512MB",
    "max_wal_size": "2GB",  # 8GB kept 6.8 GB of WAL next to a 3.7 GB 1M set
    "checkpoint_timeout": "30min",
}
# Set only while plans are captured: every statement's plan, with actual times and buffers.
EXPLAIN_ON = {
    "auto_explain.log_min_duration": "0",
    "auto_explain.log_analyze": "on",
    "auto_explain.log_buffers": "on",
    "auto_explain.log_timing": "on",
    "auto_explain.log_format": "json",
}
# A sequential scan of these is flagged: the four big tables, and the tables a list
# page reads once per article (20 scans of 1,000 tags cost a 1M list page 3 ms).
WATCHED = ("articles", "favorites", "follows", "comments", "article_tags", "tags", "users")


def database(size: str) -> str:
    return f"conduit_scale_{size}"


@contextmanager
def cluster(data: Path = DATA) -> Iterator[PostgresServer]:
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o755)  # Postgres runs as an unprivileged user when the bench runs as root
    server = PostgresServer(data / "pg" / "data", free_port())
    if server.initialised() and server.running():  # left behind by an interrupted run
        server.stop("fast")
    server.start()
    try:
        if any(server.query(f"SHOW {name}") != value for name, value in SETTINGS.items()):
            for name, value in SETTINGS.items():
                listed = ", ".join(f"'{item}'" for item in value.split(","))
                server.query(f"ALTER SYSTEM SET {name} = {listed}")
            server.stop("fast")
            server.start()
        server.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        # Known only once the library is loaded; planning is part of what a request costs.
        if server.query("SHOW pg_stat_statements.track_planning") != "on":
            server.query("ALTER SYSTEM SET pg_stat_statements.track_planning = on")
            server.query("SELECT pg_reload_conf()")
        yield server
    finally:
        server.stop("fast")


def postmaster_pid(server: PostgresServer) -> int:
    return int((server.datadir / "postmaster.pid").read_text().split()[0])


def cluster_cpu_seconds(pid: int) -> float:
    """User + system CPU of the postmaster and every backend, live or gone (the postmaster
    reaps its children: parallel workers and closed connections count in its children's
    times)."""
    root = psutil.Process(pid)
    times = root.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in root.children():
        try:
            child_times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += child_times.user + child_times.system
    return total


def statements_seconds(server: PostgresServer, name: str) -> float:
    """pg_stat_statements' total planning and execution time in `name` so far."""
    found = server.query(
        "SELECT coalesce(sum(s.total_plan_time + s.total_exec_time), 0) / 1000 "
        "FROM pg_stat_statements s "
        f"JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = '{name}'"
    )
    return float(found or 0)


def wait_idle(server: PostgresServer, name: str, timeout: float = 60.0) -> None:
    """Until no statement of `name` runs (or `timeout` has passed)."""
    deadline = time.monotonic() + timeout
    active = f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{name}' AND state = 'active'"
    while server.query(active) != "0" and time.monotonic() < deadline:
        time.sleep(0.1)


class PostgresMeter:
    """interleaved.SliceMeter: Postgres CPU (the whole cluster: only one variant is driven at a
    time) and pg_stat_statements' execution time in the variant's database, per slice."""

    def __init__(self, server: PostgresServer, databases: dict[str, str]) -> None:
        self.server = server
        self.databases = databases  # variant name -> database
        self.pid = postmaster_pid(server)
        self._exec = 0.0
        self._cpu = 0.0

    def start(self, variant: str) -> None:
        # psql's own backend runs outside the CPU window: statements first, CPU last.
        self._exec = statements_seconds(self.server, self.databases[variant])
        self._cpu = cluster_cpu_seconds(self.pid)

    def stop(self, variant: str) -> dict[str, float]:
        # Statements still running when the load stopped belong to this slice, not the next.
        wait_idle(self.server, self.databases[variant])
        cpu = cluster_cpu_seconds(self.pid) - self._cpu
        executed = statements_seconds(self.server, self.databases[variant]) - self._exec
        return {"pg_cpu_s": cpu, "pg_exec_s": executed}


@dataclass
class Plan:
    """One statement's plan, as auto_explain logged it."""

    query: str
    ms: float
    hit: int
    read: int
    shape: str
    seq_scans: list[str] = field(default_factory=list)

    def line(self) -> str:
        flag = f"  SEQ SCAN on {', '.join(self.seq_scans)}" if self.seq_scans else ""
        return f"{self.ms:9.2f} ms  hit {self.hit:>7,} read {self.read:>7,}  {self.shape}{flag}"


def _shape(node: dict[str, Any], seq: list[str]) -> str:
    kind = node["Node Type"]
    relation = node.get("Relation Name")
    if kind == "Seq Scan" and relation in WATCHED:
        seq.append(relation)
    label = kind
    if relation:
        label += f" {relation}"
    if node.get("Index Name"):
        label += f" using {node['Index Name']}"
    loops = int(node.get("Actual Loops", 1))
    if loops > 1:
        label += f" x{loops}"
    children = [_shape(child, seq) for child in node.get("Plans", [])]
    return f"{label}({', '.join(children)})" if children else label


def _plan(text: str) -> Plan | None:
    duration = re.search(r"duration: ([0-9.]+) ms\s+plan:", text)
    start = text.find("{", duration.end()) if duration else -1
    if duration is None or start < 0:
        return None
    try:
        body = json.loads(text[start:])
    except json.JSONDecodeError:
        return None
    top = body.get("Plan", {})
    if "Relation Name" not in json.dumps(top):  # SELECT 1, pg_reload_conf(): no table read
        return None
    seq: list[str] = []
    shape = _shape(top, seq)
    return Plan(
        query=" ".join(str(body.get("Query Text", "")).split()),
        ms=float(duration.group(1)),
        hit=int(top.get("Shared Hit Blocks", 0)),
        read=int(top.get("Shared Read Blocks", 0)),
        shape=shape,
        seq_scans=sorted(set(seq)),
    )


_ENTRY = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", re.MULTILINE)


def plans_in(log: str) -> list[Plan]:
    starts = [m.start() for m in _ENTRY.finditer(log)] + [len(log)]
    entries = (log[a:b] for a, b in itertools.pairwise(starts))
    return [plan for entry in entries if "plan:" in entry and (plan := _plan(entry)) is not None]


@contextmanager
def explaining(server: PostgresServer) -> Iterator[list[Plan]]:
    """Plans of every statement run inside the block (the caller runs nothing else)."""
    offset = server.logfile.stat().st_size
    for name, value in EXPLAIN_ON.items():
        server.query(f"ALTER SYSTEM SET {name} = '{value}'")
    server.query("SELECT pg_reload_conf()")
    time.sleep(0.3)  # backends read the new settings at their next command
    found: list[Plan] = []
    try:
        yield found
    finally:
        for name in EXPLAIN_ON:
            server.query(f"ALTER SYSTEM RESET {name}")
        server.query("SELECT pg_reload_conf()")
        time.sleep(0.3)
        with server.logfile.open("rb") as handle:
            handle.seek(offset)
            found += plans_in(handle.read().decode("utf-8", "replace"))
