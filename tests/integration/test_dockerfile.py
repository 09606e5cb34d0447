"""The Dockerfile, checked without a Docker engine (hadolint runs in make lint and
tests/unit/test_static_analysis.py): the structure of the stages, and the runtime contract
(CMD, env, HEALTHCHECK, log config) exercised against the real uvicorn and a live app started
exactly as the image's CMD starts it."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from app.core.logging_config import uvicorn_log_config
from bench.environment import IMAGE_KEEP_ALIVE, MALLOC_ENV
from tests.integration.conftest import (
    ROOT,
    dockerfile_cmd,
    instructions,
    runtime_env,
    stages,
    uvicorn_args_from_cmd,
)
from tests.support.live import LiveServer

ROUTER_TEXT = (ROOT / "deploy" / "nginx" / "router.conf").read_text()
APP_UID = "10001"


def healthcheck_command() -> list[str]:
    [args] = [rest for keyword, rest in stages()[-1] if keyword == "HEALTHCHECK"]
    parsed = json.loads(args[args.index("CMD ") + 4 :])
    assert isinstance(parsed, list)
    return [str(part) for part in parsed]


def test_multi_stage_with_only_the_venv_in_the_runtime() -> None:
    builder, runtime = stages()
    assert builder[0][1].endswith("AS builder")
    assert runtime[0][1].endswith("AS runtime")
    builder_runs = " ".join(rest for keyword, rest in builder if keyword == "RUN")
    assert "-r requirements-production.txt" in builder_runs
    assert "--no-deps ." in builder_runs
    for keyword, rest in builder + runtime:
        if keyword == "RUN" and "pip install" in rest:
            assert "--no-cache-dir" in rest
    runtime_text = " ".join(rest for _, rest in runtime)
    for forbidden in ("gcc", "build-essential", "apt-get install", "pip install", "curl", "wget"):
        assert forbidden not in runtime_text, forbidden
    copies = [rest for keyword, rest in runtime if keyword == "COPY"]
    assert "--from=builder /opt/venv /opt/venv" in copies
    assert {c.split()[0] for c in copies if not c.startswith("--from")} == {
        "alembic.ini",
        "alembic",
        "deploy/uvicorn-log-config.json",
    }


def test_runs_as_fixed_non_root_user() -> None:
    runtime = stages()[-1]
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users == [f"{APP_UID}:{APP_UID}"]
    runs = " ".join(rest for keyword, rest in runtime if keyword == "RUN")
    assert f"--uid {APP_UID}" in runs
    assert f"--gid {APP_UID}" in runs
    # The directories the app writes belong to that user.
    assert f"chown {APP_UID}:{APP_UID} /tmp/prometheus /var/lib/conduit/uploads" in runs


def test_stop_signal_and_exposed_port() -> None:
    runtime = dict(stages()[-1])
    assert runtime["STOPSIGNAL"] == "SIGTERM"
    assert runtime["EXPOSE"] == "8000"


def test_cmd_is_exec_form_uvicorn_with_proxy_headers() -> None:
    cmd = dockerfile_cmd()
    assert cmd[:2] == ["uvicorn", "app.main:app"]
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert cmd[cmd.index("--port") + 1] == "8000"
    assert "--proxy-headers" in cmd
    assert "--no-access-log" in cmd
    assert "--workers" not in cmd  # WEB_CONCURRENCY decides
    assert (ROOT / cmd[cmd.index("--log-config") + 1]).is_file()


def test_uvicorn_takes_workers_and_timeouts_from_the_image_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real uvicorn CLI parses the CMD with the image's ENV: nothing is hard-coded."""
    from uvicorn.config import Config
    from uvicorn.main import main as uvicorn_cli

    env = runtime_env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    context = uvicorn_cli.make_context("uvicorn", dockerfile_cmd()[1:])
    params = context.params
    assert params["timeout_graceful_shutdown"] == int(env["UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN"])
    # The app keeps idle connections longer than the router does: the proxy always closes first.
    nginx_idle = re.search(r"upstream conduit_app \{[^}]*keepalive_timeout (\d+)s;", ROUTER_TEXT)
    assert nginx_idle is not None
    assert params["timeout_keep_alive"] > int(nginx_idle.group(1))
    assert params["proxy_headers"] is True
    assert params["access_log"] is False
    config = Config("app.main:app", workers=params["workers"])
    assert config.workers == int(env["WEB_CONCURRENCY"])
    assert config.forwarded_allow_ips == env["FORWARDED_ALLOW_IPS"]
    # Graceful timeout at least the app's own grace period.
    from app.core.config import Settings

    grace = Settings.model_fields["SHUTDOWN_GRACE_SECONDS"].default
    assert int(env["UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN"]) >= grace


def test_runtime_env_matches_the_deployment() -> None:
    env = runtime_env()
    assert env["APP_ENV"] == "production"
    assert env["LOG_FORMAT"] == "json"
    assert env["PROMETHEUS_MULTIPROC_DIR"] == "/tmp/prometheus"
    assert env["UPLOAD_DIR"] == "/var/lib/conduit/uploads"
    assert env["PATH"].startswith("/opt/venv/bin:")


def test_bench_runs_with_the_images_malloc_settings() -> None:
    env = runtime_env()
    assert {name: env[name] for name in MALLOC_ENV} == MALLOC_ENV
    assert env["UVICORN_TIMEOUT_KEEP_ALIVE"] == IMAGE_KEEP_ALIVE


def test_log_config_file_is_the_apps_json_config() -> None:
    cmd = dockerfile_cmd()
    path = ROOT / cmd[cmd.index("--log-config") + 1]
    assert json.loads(path.read_text()) == json.loads(json.dumps(uvicorn_log_config("json")))


def test_dockerignore_allows_only_what_is_copied() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = [line[1:].rstrip("/") for line in lines if line.startswith("!")]
    sources: list[str] = []
    for keyword, rest in instructions():
        if keyword == "COPY" and not rest.startswith("--from"):
            sources += rest.split()[:-1]
    for source in sources:
        assert (ROOT / source).exists(), f"COPY source missing from the repository: {source}"
        assert any(fnmatch.fnmatch(source, pattern) for pattern in allowed), source
    for secret in (".env", ".venv", ".data", "tests", ".git"):
        assert not any(fnmatch.fnmatch(secret, pattern) for pattern in allowed), secret


@pytest.fixture(scope="module")
def image_like_app(
    base_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """Two workers under the CMD's options and log config, with multiprocess metrics on."""
    metrics_dir = tmp_path_factory.mktemp("prometheus")
    env = {**base_env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    server = LiveServer(env, workers=2, extra_args=uvicorn_args_from_cmd())
    server.start(timeout=90)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_every_line_of_the_supervisor_and_workers_is_json(image_like_app: LiveServer) -> None:
    # One worker answering the readiness poll does not mean the other has logged yet.
    deadline = time.monotonic() + 15
    while True:
        lines = list(image_like_app.lines)
        parsed = [json.loads(line) for line in lines if line.strip()]
        events = " ".join(str(entry.get("event")) for entry in parsed)
        if events.count("app_starting") >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert "Started parent process" in events  # the supervisor, logging through the config
    assert events.count("app_starting") == 2  # both workers


@pytest.mark.slow
def test_healthcheck_command_exits_zero_only_while_live(image_like_app: LiveServer) -> None:
    command = healthcheck_command()
    assert command[0] == "python"
    assert "/health/liveness" in command[-1]
    assert "curl" not in " ".join(command)
    local = [
        sys.executable,
        *command[1:-1],
        command[-1].replace(":8000", f":{image_like_app.port}"),
    ]
    assert subprocess.run(local, check=False, timeout=30).returncode == 0
    image_like_app.stop()
    result = subprocess.run(local, check=False, timeout=30, capture_output=True)
    assert result.returncode != 0


def test_healthcheck_does_not_need_a_shell() -> None:
    command = healthcheck_command()
    assert command[0] != "CMD-SHELL"
    env = {k: v for k, v in os.environ.items() if k != "PATH"}
    # Only the standard library: importable by a bare interpreter.
    code = command[-1].split(";")[0]
    result = subprocess.run([sys.executable, "-I", "-c", code], env=env, check=False)
    assert result.returncode == 0
