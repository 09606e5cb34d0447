"""In multiprocess mode a stopping worker removes its live gauge files, so a restarted worker's
in-flight or pool figures are not summed forever; its counters stay."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import ast
import os
from app.observability.metrics import AppMetrics
metrics = AppMetrics()
metrics.http_in_flight.inc()
metrics.http_requests.labels("GET", "/x", "200").inc()
print(sorted(os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"])))
metrics.process_exited()
print(sorted(os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"])))
"""


def test_worker_exit_drops_live_gauges_and_keeps_counters(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True
    )
    before, after = (ast.literal_eval(line) for line in result.stdout.splitlines())
    assert any(name.startswith("gauge_livesum") for name in before)
    assert not any(name.startswith("gauge_live") for name in after)
    assert any(name.startswith("counter") for name in after)
