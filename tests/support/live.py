"""A real `uvicorn app.main:app` process for tests where the network, signals or several
workers matter. Its stdout (JSON log lines) is collected for assertions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from devstack.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


class LiveServer:
    def __init__(
        self,
        env: Mapping[str, str],
        *,
        workers: int = 1,
        extra_args: Sequence[str] = (),
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.env = {**os.environ, **env}
        self.workers = workers
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_path: str = "/health/liveness", timeout: float = 30.0) -> LiveServer:
        command = [
            sys.executable, "-m", "uvicorn", "app.main:app",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", str(self.workers), *self.extra_args,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()
        self.wait_until_serving(ready_path, timeout)
        return self

    def _collect(self) -> None:
        assert self.process
        assert self.process.stdout
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_until_serving(self, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process and self.process.poll() is not None:
                raise RuntimeError("server exited:\n" + "\n".join(self.lines[-40:]))
            try:
                if httpx.get(self.url + path, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError("server did not become ready:\n" + "\n".join(self.lines[-40:]))

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines if line.strip()]

    def wait_for_line(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        """The last JSON line matching `predicate`. A thread reads stdout, and the app logs a
        request's `request_completed` line after the response went out, so a test that has its
        response may be ahead of the line: wait for it instead of reading once."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.json_lines() if predicate(line)]
            if found:
                return found[-1]
            if time.monotonic() >= deadline:
                raise AssertionError(f"no matching log line in {timeout} s")
            time.sleep(0.05)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.process
        self.process.send_signal(sig)

    def stop(self, timeout: float = 40.0) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._reader:
            self._reader.join(timeout=5)
        return int(self.process.returncode)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def timed_get(http: httpx.Client, path: str) -> tuple[httpx.Response, float]:
    """The response and how long it took, in seconds."""
    started = time.monotonic()
    response = http.get(path)
    return response, time.monotonic() - started
