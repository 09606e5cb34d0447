"""A real Prometheus (Debian's /usr/bin/prometheus) on 127.0.0.1, scraping one target.

`render_config` writes the config: one scrape job (metrics path, bearer token read from a file,
as deploy/prometheus/prometheus.yml does), the rule files, and the scrape and evaluation
intervals. `PrometheusServer` runs it with a throwaway TSDB, waits until the target has been
scraped, answers instant and range queries through the HTTP API, and stops it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from devstack.servers import free_port

PROMETHEUS = "/usr/bin/prometheus"


def prometheus_installed() -> bool:
    return os.access(PROMETHEUS, os.X_OK)


def prometheus_version() -> str:
    """The version `prometheus --version` prints (Debian's: "2.42.0+ds"); "?" if none."""
    out = subprocess.run([PROMETHEUS, "--version"], capture_output=True, text=True, check=False)
    words = (out.stdout or out.stderr).split()
    return words[2] if len(words) > 2 else "?"


def render_config(
    *,
    job: str,
    target: str,
    metrics_path: str = "/metrics",
    credentials_file: Path | None = None,
    rule_files: Sequence[str | Path] = (),
    scrape_interval: str = "1s",
    evaluation_interval: str = "1s",
) -> str:
    """prometheus.yml for one static target (host:port); lists in JSON, which YAML reads."""
    authorization = ""
    if credentials_file is not None:
        authorization = (
            f"    authorization:\n      type: Bearer\n      credentials_file: {credentials_file}\n"
        )
    # The timeout equals the interval: Prometheus refuses a timeout longer than the interval.
    return f"""\
global:
  scrape_interval: {scrape_interval}
  scrape_timeout: {scrape_interval}
  evaluation_interval: {evaluation_interval}
rule_files: {json.dumps([str(path) for path in rule_files])}
scrape_configs:
  - job_name: {job}
    metrics_path: {metrics_path}
{authorization}    static_configs:
      - targets: {json.dumps([target])}
"""


class PrometheusServer:
    """Prometheus with its config, token file, TSDB and log under `workdir`, scraping `target`
    (host:port) as job `job`; the token, if any, is sent as a bearer token."""

    def __init__(
        self,
        workdir: Path,
        target: str,
        *,
        job: str,
        metrics_path: str = "/metrics",
        token: str | None = None,
        rule_files: Sequence[str | Path] = (),
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
    ) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.job = job
        self.port = free_port()
        token_file = None
        if token is not None:
            token_file = self.dir / "metrics-token"
            token_file.write_text(token)
            token_file.chmod(0o600)
        self.config = self.dir / "prometheus.yml"
        config = render_config(
            job=job,
            target=target,
            metrics_path=metrics_path,
            credentials_file=token_file,
            rule_files=rule_files,
            scrape_interval=scrape_interval,
            evaluation_interval=evaluation_interval,
        )
        self.config.write_text(config)
        self.log_path = self.dir / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        """Running, and the target scraped once (up == 1), so queries already see its data."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    PROMETHEUS, f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.dir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn",
                ],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.log_path.read_text()[-2000:]}")
            try:
                up = self.query(f'up{{job="{self.job}"}}')
                if up and up[0]["value"][1] == "1":
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"prometheus never scraped {self.job}; see {self.log_path}")

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """/api/v1/query: the result vector at `at` (now if None)."""
        params: dict[str, str | float] = {"query": expr}
        if at is not None:
            params["time"] = at
        return self._get("/api/v1/query", params, timeout=10)

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """/api/v1/query_range: one matrix entry per series, `values` as [time, "value"]."""
        params: dict[str, str | float] = {"query": expr, "start": start, "end": end, "step": step}
        return self._get("/api/v1/query_range", params, timeout=30)

    def _get(
        self, path: str, params: dict[str, str | float], timeout: float
    ) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}{path}", params=params, timeout=timeout)
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()["data"]["result"]
        return result

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
