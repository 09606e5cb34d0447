"""Fixtures for the deployment tests: a real Nginx running the project's nginx.conf, the Compose
binary, and the app started exactly as the Dockerfile's CMD starts it.

How nginx.conf is rendered for tests (the documented mechanism): nginx.conf is an envsubst
template, as the official nginx image renders it in production (/etc/nginx/templates, with
NGINX_ENVSUBST_FILTER=^NGINX_). `devstack.nginx.render_template` performs the same substitution
of `${NGINX_*}` placeholders, with loopback values instead of the Compose ones: the listen
address, the upstream (a live uvicorn) and the uploads root. Nothing else in the file changes.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from devstack.nginx import NginxProcess, render_template
from devstack.servers import PostgresServer, free_port, wait_for_port
from tests.support.live import LiveServer

ROOT = Path(__file__).resolve().parents[2]
NGINX_CONF = ROOT / "nginx.conf"
TLS_TEMPLATE = ROOT / "deploy" / "nginx" / "tls.conf.template"
TLS_OFF_TEMPLATE = ROOT / "deploy" / "nginx" / "tls-off.conf.template"
ROUTER_CONF = ROOT / "deploy" / "nginx" / "router.conf"
UPSTREAM_TEMPLATE = ROOT / "deploy" / "nginx" / "upstream.conf.template"
DOCKERFILE = ROOT / "Dockerfile"


def dockerfile_cmd() -> list[str]:
    """The exec-form CMD of the Dockerfile (the last CMD instruction)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    commands = [line[4:] for line in text.splitlines() if line.startswith("CMD ")]
    assert commands, "Dockerfile has no CMD"
    parsed = json.loads(commands[-1])
    assert isinstance(parsed, list)
    return [str(part) for part in parsed]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    pairs = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


def runtime_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in stages()[-1]:
        if keyword == "ENV":
            for name, value in re.findall(r"(\w+)=(\S+)", rest):
                env[name] = value
    return env


def uvicorn_args_from_cmd() -> list[str]:
    """Options of the Dockerfile's uvicorn command, minus host/port (the live server picks them)."""
    cmd = dockerfile_cmd()
    assert cmd[:2] == ["uvicorn", "app.main:app"], cmd
    args, rest = [], cmd[2:]
    while rest:
        item = rest.pop(0)
        if item in ("--host", "--port"):
            rest.pop(0)
            continue
        args.append(item)
    return args


def make_dir(parent: Path, prefix: str) -> Path:
    """A fresh directory nginx's unprivileged workers can traverse (pytest's tmp dirs are 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    path.chmod(0o755)
    return path


class CapturedNginx(NginxProcess):
    """An NginxProcess whose stdout (the JSON access log) and stderr are collected line by line."""

    def __init__(
        self, workdir: Path, port: int, conf: str, files: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(workdir, port, conf, files)
        self.lines: list[str] = []
        self.errors: list[str] = []

    def test_config(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command("-t"), capture_output=True, text=True, check=False, timeout=30
        )

    def start(self) -> CapturedNginx:
        self.process = subprocess.Popen(
            self.command(),
            cwd=self.dir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        for stream, sink in ((self.process.stdout, self.lines), (self.process.stderr, self.errors)):
            threading.Thread(target=self._collect, args=(stream, sink), daemon=True).start()
        try:
            wait_for_port(self.port, timeout=30)
        except TimeoutError:
            self.stop()
            raise RuntimeError("nginx did not start:\n" + "\n".join(self.errors)) from None
        return self

    @staticmethod
    def _collect(stream: Any, sink: list[str]) -> None:
        for line in stream:
            sink.append(line.rstrip("\n"))

    def access_log(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.lines) if line.startswith("{")]


class NginxServer(CapturedNginx):
    """The project's nginx.conf (the edge) on 127.0.0.1, in front of `upstream`."""

    def __init__(
        self,
        workdir: Path,
        upstream: str,
        *,
        tls: Mapping[str, str] | None = None,
        overrides: Mapping[str, str] | None = None,
    ):
        port = free_port()
        self.tls_port = free_port() if tls else None
        self.uploads_root = workdir / "public"
        (self.uploads_root / "uploads").mkdir(parents=True, exist_ok=True)
        for path in (self.uploads_root, self.uploads_root / "uploads"):
            path.chmod(0o755)  # workers may run as an unprivileged user
        values = {
            "NGINX_LISTEN": f"127.0.0.1:{port}",
            "NGINX_SERVER_NAME": "_",
            "NGINX_UPSTREAM": upstream,
            # Never asked: the tests' upstreams are addresses, not names.
            "NGINX_RESOLVER": "127.0.0.1",
            "NGINX_UPLOADS_ROOT": str(self.uploads_root),
            "NGINX_TLS_LISTEN": f"127.0.0.1:{self.tls_port}",
            # The production defaults (docker-compose.production.yml): the limits are tested.
            "NGINX_API_RATE": "20r/s",
            "NGINX_AUTH_RATE": "10r/m",
            **(tls or {}),
            **(overrides or {}),
        }
        tls_template = TLS_TEMPLATE if tls else TLS_OFF_TEMPLATE
        super().__init__(
            workdir,
            port,
            render_template(NGINX_CONF.read_text(), values),
            {"tls/tls.conf": render_template(tls_template.read_text(), values)},
        )


class RouterServer(CapturedNginx):
    """deploy/nginx/router.conf run for real on 127.0.0.1, with its upstream file, switched the
    way deploy.sh switches it: rewrite the file, then `nginx -s reload`."""

    def __init__(self, workdir: Path, upstreams: list[str]) -> None:
        port = free_port()
        values = {"NGINX_ROUTER_LISTEN": f"127.0.0.1:{port}"}
        super().__init__(workdir, port, render_template(ROUTER_CONF.read_text(), values))
        self.upstream_file = workdir / "upstream.conf"
        self.write_upstreams(upstreams)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def write_upstreams(self, upstreams: list[str]) -> None:
        lines = [f"server {address} max_fails=3 fail_timeout=10s;" for address in upstreams]
        self.upstream_file.write_text("\n".join(lines) + "\n")

    def switch(self, upstreams: list[str]) -> None:
        """New upstreams in force: the reload's new workers run and the old ones have exited."""
        before = self._workers()
        self.write_upstreams(upstreams)
        subprocess.run(self.command("-s", "reload"), check=True, capture_output=True, timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            now = self._workers()
            if now and not now & before:
                return
            time.sleep(0.02)
        raise TimeoutError(f"the router's workers did not turn over: {before} -> {now}")

    def _workers(self) -> set[int]:
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return {int(pid) for pid in children.read_text().split()}


@pytest.fixture(scope="module")
def live_app(
    base_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """The app as the image runs it (the Dockerfile's uvicorn options), trusting 127.0.0.1 as
    its proxy like the app trusts nginx's network in Compose. The app's own rate limiter is off
    so every 429 seen through nginx is nginx's."""
    uploads = tmp_path_factory.mktemp("app-uploads")
    env = {
        **base_env,
        "TRUSTED_PROXIES": "127.0.0.1",
        "FORWARDED_ALLOW_IPS": "127.0.0.1",
        "RATE_LIMIT_ENABLED": "false",
        "METRICS_TOKEN": "metrics-token-for-nginx-tests",
        "UPLOAD_DIR": str(uploads),
    }
    server = LiveServer(env, extra_args=uvicorn_args_from_cmd())
    server.start(timeout=60)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def router(live_app: LiveServer, workdir: Path) -> Iterator[RouterServer]:
    """deploy/nginx/router.conf in front of the live app, as Compose runs it."""
    server = RouterServer(make_dir(workdir, "router-"), [f"127.0.0.1:{live_app.port}"])
    server.start()
    yield server
    server.stop()


OUTAGE_DATABASE = "conduit_outage"


@pytest.fixture(scope="package", autouse=True)
def shared_database_emptied_afterwards(postgres: PostgresServer, migrated: str) -> Iterator[None]:
    """Live servers run in processes of their own, outside any test's transaction, so what
    they are sent stays in the session's database. Emptied once these tests are done, so the
    tests that count rows (tests/api/test_lists.py) pass whichever package runs first."""
    from tests.conftest import TEST_DATABASE

    yield
    postgres.empty_tables(TEST_DATABASE)


@pytest.fixture
def dedicated_postgres(workdir: Path) -> Iterator[PostgresServer]:
    """A migrated Postgres of the test's own, which the test may stop and start again."""
    from tests.conftest import alembic

    # Under the session's workdir: as root the cluster runs as an unprivileged user who must be
    # able to reach it (pytest's tmp_path is private to root).
    port = free_port()
    server = PostgresServer(workdir / f"pg-outage-{port}" / "data", port)
    server.start()
    server.create_database(OUTAGE_DATABASE)
    alembic(server.url(OUTAGE_DATABASE), "upgrade", "head")
    yield server
    server.stop("immediate")
