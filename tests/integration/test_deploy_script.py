"""deploy.sh's checks against a stand-in `docker` first on PATH: the settings it refuses, the
dry run, migrations that fail, the lock, status. The rollout itself (build, new containers beside
the old, switch, drain, failed releases, rollback) runs for real in tests/e2e (`make e2e`).

The stand-in records every call (argv and APP_TAG) and simulates the engine: `compose config`
is delegated to the real Compose binary, `compose up ... app` records which tag now runs, and
`compose run migrate` exits as the test says. Readiness is a real HTTP server on 127.0.0.1 that
answers 200 or 503 depending on the tag the stand-in says is running, polled by deploy.sh's curl.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from devstack.docker_engine import compose_plugin as compose_binary
from tests.integration.conftest import ROOT

SCRIPT = ROOT / "deploy.sh"
TIMESTAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \[deploy\] ")
MUTATING = ("build", "up", "run", "exec", "down", "rm", "stop", "pull", "push", "tag")

FAKE_DOCKER = textwrap.dedent(
    """\
    #!{python}
    import json, os, sys
    args = sys.argv[1:]
    state = os.environ["FAKE_DOCKER_STATE"]
    with open(os.path.join(state, "calls.jsonl"), "a") as log:
        log.write(json.dumps({{"args": args, "app_tag": os.environ.get("APP_TAG")}}) + "\\n")
    if args[:1] == ["compose"]:
        if args[1:2] == ["version"]:
            print("Docker Compose version v2 (stand-in)")
            sys.exit(0)
        if "config" in args:
            os.execv({compose!r}, [{compose!r}, *args[1:]])
        if "up" in args and args[-1] == "app":
            with open(os.path.join(state, "running_tag"), "w") as out:
                out.write(os.environ["APP_TAG"])
        if "run" in args and "migrate" in args:
            print(os.environ.get("FAKE_MIGRATE_OUTPUT", ""))
            sys.exit(int(os.environ.get("FAKE_MIGRATE_EXIT", "0")))
    sys.exit(0)
    """
)


@dataclass
class Readiness:
    """Answers /health/readiness like nginx would for the tag the stand-in says is running."""

    state: Path
    unhealthy: set[str] = field(default_factory=set)
    server: ThreadingHTTPServer | None = None

    def start(self) -> str:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                running = outer.state / "running_tag"
                tag = running.read_text() if running.exists() else ""
                ok = self.path == "/health/readiness" and tag and tag not in outer.unhealthy
                self.send_response(200 if ok else 503)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/health/readiness"

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()


@dataclass
class Harness:
    tmp: Path
    env_file: Path
    state: Path
    deploy_state: Path
    readiness: Readiness
    env: dict[str, str]

    def run(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(SCRIPT), *args],
            env={**self.env, **extra},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def calls(self) -> list[dict[str, Any]]:
        path = self.state / "calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def mutating_calls(self) -> list[list[str]]:
        found = []
        for call in self.calls():
            args = call["args"]
            verbs = args[1:] if args[:1] == ["compose"] else args
            if any(verb in MUTATING for verb in verbs if not verb.startswith("-")):
                found.append(args)
        return found

    def app_tags_rolled(self) -> list[str]:
        return [c["app_tag"] for c in self.calls() if "up" in c["args"] and c["args"][-1] == "app"]

    def set_tags(self, current: str | None, previous: str | None = None) -> None:
        target = self.deploy_state / "production"
        target.mkdir(parents=True, exist_ok=True)
        for name, value in (("current_tag", current), ("previous_tag", previous)):
            if value:
                (target / name).write_text(value + "\n")
        if current:
            (self.state / "running_tag").write_text(current)

    def tag(self, name: str) -> str:
        path = self.deploy_state / "production" / name
        return path.read_text().strip() if path.exists() else ""


GOOD_SETTINGS = {
    "SECRET_KEY": "3f1c9a7be2d54c0e8a6b1d2c3e4f5a6b7c8d9e0f1a2b3c4d",
    "POSTGRES_PASSWORD": "k8Jq2vLw9zXp4RtY",
    "DATABASE_URL": "postgresql+asyncpg://conduit:k8Jq2vLw9zXp4RtY@postgres:5432/conduit",
    "METRICS_TOKEN": "m3tr1cs-t0ken-9d8c7b6a",
}


def write_env(path: Path, settings: dict[str, str]) -> None:
    path.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    if shutil.which("curl") is None:
        pytest.skip("deploy.sh polls with curl")
    bin_dir, state = tmp_path / "bin", tmp_path / "docker-state"
    bin_dir.mkdir()
    state.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER.format(python=sys.executable, compose=str(compose_binary())))
    docker.chmod(0o755)
    env_file = tmp_path / "production.env"
    write_env(env_file, GOOD_SETTINGS)
    readiness = Readiness(state)
    url = readiness.start()
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path),
        "FAKE_DOCKER_STATE": str(state),
        "ENV_FILE": str(env_file),
        "STATE_DIR": str(tmp_path / "deploy-state"),
        "HEALTH_URL": url,
        "HEALTH_TIMEOUT": "4",
        "HEALTH_INTERVAL": "0.5",
        "IMAGE_TAG": "new123",
    }
    yield Harness(tmp_path, env_file, state, tmp_path / "deploy-state", readiness, env)
    readiness.stop()


def test_runs_in_strict_mode() -> None:
    # shellcheck runs on it in make lint (tests/unit/test_static_analysis.py).
    assert SCRIPT.read_text().splitlines()[1:20].count("set -euo pipefail") == 1


def test_help(harness: Harness) -> None:
    result = harness.run("--help")
    assert result.returncode == 0
    for word in ("production|staging", "--dry-run", "rollback", "status"):
        assert word in result.stdout
    assert harness.calls() == []


@pytest.mark.parametrize("missing", ["SECRET_KEY", "POSTGRES_PASSWORD", "DATABASE_URL"])
def test_missing_setting_refuses_before_changing_anything(harness: Harness, missing: str) -> None:
    write_env(harness.env_file, {k: v for k, v in GOOD_SETTINGS.items() if k != missing})
    result = harness.run("production")
    assert result.returncode != 0
    assert f"{missing} is not set" in result.stdout
    assert harness.mutating_calls() == []


def test_placeholder_secrets_are_refused(harness: Harness) -> None:
    example = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            example[key] = value
    settings = {
        **GOOD_SETTINGS,
        "SECRET_KEY": example["SECRET_KEY"],
        "POSTGRES_PASSWORD": "changeme",
    }
    write_env(harness.env_file, settings)
    result = harness.run("production")
    assert result.returncode != 0
    assert "SECRET_KEY still has a placeholder value" in result.stdout
    assert "POSTGRES_PASSWORD still has a placeholder value" in result.stdout
    assert harness.mutating_calls() == []


def test_short_secret_and_missing_env_file_are_refused(harness: Harness) -> None:
    write_env(harness.env_file, {**GOOD_SETTINGS, "SECRET_KEY": "a1b2c3d4e5"})
    result = harness.run("production")
    assert result.returncode != 0
    assert "at least 32 characters" in result.stdout
    harness.env_file.unlink()
    result = harness.run("production")
    assert result.returncode != 0
    assert "is missing" in result.stdout
    assert harness.mutating_calls() == []


def test_missing_docker_is_refused(harness: Harness, tmp_path: Path) -> None:
    bare = tmp_path / "bare-bin"
    bare.mkdir()
    for tool in ("bash", "env", "dirname", "sed", "tail", "grep", "date", "cat", "curl"):
        found = shutil.which(tool)
        assert found, tool
        (bare / tool).symlink_to(found)
    result = harness.run("production", PATH=str(bare))
    assert result.returncode != 0
    assert "docker is not installed" in result.stdout


def test_failed_migration_stops_before_the_app_changes(harness: Harness) -> None:
    harness.set_tags(current="old456")
    result = harness.run("production", FAKE_MIGRATE_EXIT="1")
    assert result.returncode != 0
    assert "migrations failed" in result.stdout
    assert harness.app_tags_rolled() == []
    assert harness.tag("current_tag") == "old456"


def test_dry_run_changes_nothing(harness: Harness) -> None:
    harness.set_tags(current="old456")
    result = harness.run("production", "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert harness.mutating_calls() == []
    assert "dry-run: docker build" in result.stdout
    assert "dry-run: compose run --rm migrate" in result.stdout
    assert harness.tag("current_tag") == "old456"


def test_rollback_without_previous_tag_fails(harness: Harness) -> None:
    harness.set_tags(current="bbb222")
    result = harness.run("rollback")
    assert result.returncode != 0
    assert "no previous tag" in result.stdout
    assert harness.mutating_calls() == []


def test_status_reports_tags_and_readiness(harness: Harness) -> None:
    harness.set_tags(current="bbb222", previous="aaa111")
    result = harness.run("status")
    assert result.returncode == 0
    assert "deployed: bbb222; previous: aaa111" in result.stdout
    assert "readiness: ok" in result.stdout
    assert harness.mutating_calls() == []


def test_default_tag_is_the_git_commit(harness: Harness) -> None:
    env = {k: v for k, v in harness.env.items() if k != "IMAGE_TAG"}
    harness.env = env
    result = harness.run("production", "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    sha = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    assert f"conduit-api:{sha}" in result.stdout


def test_dry_run_says_what_the_rollout_would_do(harness: Harness) -> None:
    result = harness.run("production", "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "would start 2 app container(s) on conduit-api:new123" in result.stdout
    steps = [line.split("[deploy] ")[1] for line in result.stdout.splitlines() if "] step " in line]
    assert steps[0] == "step 1/6: build conduit-api:new123"
    assert steps[1].startswith("step 1/6 done in ")


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_replica_count_must_be_a_positive_number(harness: Harness, value: str) -> None:
    result = harness.run("production", APP_REPLICAS=value)
    assert result.returncode != 0
    assert "APP_REPLICAS must be a whole number" in result.stdout
    assert harness.mutating_calls() == []


def test_a_second_deploy_of_the_same_target_is_refused_while_one_runs(harness: Harness) -> None:
    if shutil.which("flock") is None:
        pytest.skip("flock (util-linux) is not installed")
    lock = harness.deploy_state / "production" / ".lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(["flock", str(lock), "sleep", "30"])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            probe = subprocess.run(["flock", "-n", str(lock), "true"], check=False)
            if probe.returncode != 0:
                break
            time.sleep(0.05)
        result = harness.run("production")
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode != 0
    assert "another deploy of production is running" in result.stdout
    assert harness.mutating_calls() == []


def test_a_database_ahead_of_the_release_is_not_a_failed_migration(harness: Harness) -> None:
    """A redeploy after a rollback: alembic does not know the database's revision, which a
    later release's expand step wrote. deploy.sh warns and goes on to start the containers."""
    harness.set_tags(current="old456")
    result = harness.run(
        "production",
        FAKE_MIGRATE_EXIT="255",
        FAKE_MIGRATE_OUTPUT="FAILED: Can't locate revision identified by 'e2e00000c01a'",
    )
    assert (
        "WARNING: the database is at a revision conduit-api:new123 does not know" in result.stdout
    )
    assert "migrations failed" not in result.stdout
    assert "step 4/6: start 2 container(s) of conduit-api:new123" in result.stdout
    # (The stand-in engine starts no container, so the rollout itself stops there.)


def test_any_other_migration_failure_stops_the_deploy(harness: Harness) -> None:
    harness.set_tags(current="old456")
    result = harness.run(
        "production", FAKE_MIGRATE_EXIT="1", FAKE_MIGRATE_OUTPUT="relation already exists"
    )
    assert result.returncode != 0
    assert "migrations failed; nothing was switched and old456 keeps serving" in result.stdout
    assert "    relation already exists" in result.stdout
    assert "step 4/6" not in result.stdout
