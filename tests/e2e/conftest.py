"""End-to-end: the real images in a real Docker engine, deployed by `./deploy.sh` (`make e2e`).

The session starts a private dockerd with its local registry (devstack.docker_engine), makes
sure the stand-in base images exist (built from Debian packages on the first run, cached in
`.data/e2e` after), copies the working tree to a checkout of its own and deploys it from a
clean state. Everything the session starts is removed at the end: containers, volumes,
networks, the daemon and the registry. The images and build cache stay in `.data/e2e`.

These tests never run in `make test` (marker `e2e`, deselected there): that suite must keep
working on a machine without Docker.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from devstack.docker_engine import DockerEngine, unavailable_reason
from devstack.standin_images import ensure_standins
from tests.e2e.stack import ROOT, Stack

STATE_DIR = ROOT / ".data" / "e2e"
REPORT_KEY = pytest.StashKey[list[str]]()


@pytest.fixture(scope="session")
def engine() -> Iterator[DockerEngine]:
    reason = unavailable_reason()
    if reason:
        # `make e2e` was asked for: a missing engine is a failure, never a quiet skip.
        pytest.fail(f"no Docker engine can run here: {reason}", pytrace=False)
    engine = DockerEngine(STATE_DIR)
    # A CI time-out or Ctrl-C sends SIGTERM/SIGINT: turn the first into KeyboardInterrupt too, so
    # the teardowns below run and no daemon or container outlives the run.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def stack(engine: DockerEngine) -> Iterator[Stack]:
    images = ensure_standins(engine)
    workdir = Path(tempfile.mkdtemp(prefix="conduit-e2e-", dir=STATE_DIR))
    stack = Stack(engine, workdir / "checkout", images, logs=STATE_DIR / "logs")
    shutil.rmtree(stack.logs, ignore_errors=True)
    stack.prepare()
    try:
        first = stack.deploy("production", label="first-deploy")
        assert first.returncode == 0, first.output[-6000:]
        yield stack
    finally:
        stack.down()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def report(request: pytest.FixtureRequest) -> list[str]:
    """Lines the suite prints at the end of the run (the table of figures)."""
    return request.config.stash.setdefault(REPORT_KEY, [])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = terminalreporter.config.stash.get(REPORT_KEY, [])
    if lines:
        terminalreporter.section("deploys under load")
        for line in lines:
            terminalreporter.write_line(line)
