"""Load generators: wrk with bench/wrk/workload.lua when installed, locust headless otherwise.

Both take the same workload description and return the same figures: requests, duration,
latency percentiles, non-2xx responses and socket errors.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
WRK_SCRIPT = BENCH / "wrk" / "workload.lua"
LOCUSTFILE = BENCH / "locustfile.py"


@dataclass(frozen=True)
class Load:
    """One load: a wrk/locust mode, its data files, a path (mode "get") and a connection count."""

    mode: str
    path: str = "/"
    args: tuple[str, ...] = ()
    connections: int = 64


@dataclass(frozen=True)
class Measured:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    socket_errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def generator() -> str:
    override = os.environ.get("BENCH_GENERATOR")
    if override:
        return override
    return "wrk" if shutil.which("wrk") else "locust"


def command(base_url: str, load: Load, seconds: float, tool: str, csv_prefix: Path) -> list[str]:
    if tool == "wrk":
        return [
            "wrk", "-t", "2", "-c", str(load.connections), "-d", f"{max(int(seconds), 1)}s",
            "--timeout", "5s", "-s", str(WRK_SCRIPT), base_url + load.path,
            "--", load.mode, *load.args,
        ]  # fmt: skip
    return [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "-u", str(load.connections), "-r", str(load.connections), "-t", f"{max(int(seconds), 1)}s",
        "--host", base_url, "--csv", str(csv_prefix), "--only-summary", "--loglevel", "ERROR",
    ]  # fmt: skip


def start(base_url: str, load: Load, seconds: float, tool: str, workdir: Path) -> Running:
    csv_prefix = Path(tempfile.mkdtemp(dir=workdir)) / "locust"
    env = {
        **os.environ,
        "BENCH_MODE": load.mode,
        "BENCH_PATH": load.path,
        "BENCH_ARGS": "\n".join(load.args),
    }
    process = subprocess.Popen(
        command(base_url, load, seconds, tool, csv_prefix),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return Running(process, tool, csv_prefix, seconds)


class Running:
    def __init__(
        self, process: subprocess.Popen[str], tool: str, csv_prefix: Path, seconds: float
    ) -> None:
        self.process = process
        self.tool = tool
        self.csv_prefix = csv_prefix
        self.seconds = seconds

    def interrupt(self) -> None:
        """Stop the load now (wrk stops on SIGINT and still prints its figures)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)

    def result(self) -> Measured:
        stdout, stderr = self.process.communicate(timeout=self.seconds + 60)
        if self.tool == "wrk":
            return _from_wrk(stdout, stderr)
        return _from_locust(self.csv_prefix, self.seconds)


def run(base_url: str, load: Load, seconds: float, tool: str, workdir: Path) -> Measured:
    return start(base_url, load, seconds, tool, workdir).result()


def _from_wrk(stdout: str, stderr: str) -> Measured:
    lines = [line for line in stdout.splitlines() if line.startswith('{"requests"')]
    if not lines:
        raise RuntimeError(f"wrk printed no summary:\n{stdout}\n{stderr}")
    data = json.loads(lines[-1])
    return Measured(
        requests=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        non2xx=int(data["status"]),
        socket_errors=sum(int(data[k]) for k in ("connect", "read", "write", "timeout")),
    )


def _from_locust(csv_prefix: Path, seconds: float) -> Measured:
    stats = Path(f"{csv_prefix}_stats.csv")
    with stats.open() as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    total = rows["Aggregated"]
    failures = Path(f"{csv_prefix}_failures.csv")
    non2xx = socket_errors = 0
    if failures.exists():
        with failures.open() as handle:
            for row in csv.DictReader(handle):
                count = int(row["Occurrences"])
                if "HTTPError" in row["Error"] or "status" in row["Error"].lower():
                    non2xx += count
                else:
                    socket_errors += count
    return Measured(
        requests=int(total["Request Count"]),
        seconds=seconds,
        p50_ms=_number(total["50%"]),
        p99_ms=_number(total["99%"]),
        non2xx=non2xx,
        socket_errors=socket_errors,
    )


def _number(cell: str) -> float:
    # locust writes N/A for a run that completed no request (e.g. a very short warm-up)
    try:
        return float(cell)
    except ValueError:
        return 0.0
