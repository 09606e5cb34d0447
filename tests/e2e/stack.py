"""The project deployed as an operator deploys it: a checkout, a `.env`, `./deploy.sh production`.

The checkout is a copy of this working tree (tracked and untracked, ignored files left out) in a
git repository of its own, so the suite can commit releases to it (a migration, a release that
crashes, one that never gets ready) without touching the developer's repository. `.env` is
`.env.example` with generated secrets and the few values a test host needs (free ports, the
stand-in images, limits that 16 clients on one address do not trip).
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack.docker_engine import DockerEngine
from devstack.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
TARGET = "production"
PROJECT = f"conduit-{TARGET}"
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
STEP_DONE = re.compile(r"\[deploy\] step (\d)/6 done in ([0-9.]+)s")


@dataclass(frozen=True)
class DeployRun:
    command: tuple[str, ...]
    returncode: int
    output: str
    seconds: float

    @property
    def steps(self) -> dict[str, float]:
        """Step number -> seconds, from deploy.sh's "step N/6 done in X s" lines."""
        return {number: float(seconds) for number, seconds in STEP_DONE.findall(self.output)}


@dataclass(frozen=True)
class AppContainer:
    id: str
    name: str
    tag: str
    user: str
    health: str
    pid: int
    restarts: int


def copy_working_tree(destination: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for relative in filter(None, listed.split("\0")):
        source = ROOT / relative
        if not source.is_file():
            continue  # deleted in the working tree
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def production_env(example: str, overrides: Mapping[str, str]) -> str:
    """`.env.example` with each overridden key's value replaced (keys it lacks appended)."""
    lines, seen = [], set()
    for line in example.splitlines():
        key = line.split("=", 1)[0] if "=" in line and not line.startswith("#") else ""
        if key in overrides:
            lines.append(f"{key}={overrides[key]}")
            seen.add(key)
        else:
            lines.append(line)
    lines += [f"{key}={value}" for key, value in overrides.items() if key not in seen]
    return "\n".join(lines) + "\n"


@dataclass
class Stack:
    engine: DockerEngine
    workdir: Path
    images: Mapping[str, str]
    logs: Path
    http_port: int = field(default_factory=free_port)
    prometheus_port: int = field(default_factory=free_port)
    runs: list[DeployRun] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def prometheus_url(self) -> str:
        """Prometheus of the `monitoring` profile, where Compose publishes it (127.0.0.1)."""
        return f"http://127.0.0.1:{self.prometheus_port}"

    @property
    def env(self) -> dict[str, str]:
        env = {
            **self.engine.env,
            "BUILD_NETWORK": "host",  # no NAT without iptables: the builder uses the host's
            "HEALTH_TIMEOUT": "45",
        }
        # pip in the builder trusts what the host's pip trusts (a proxy's CA among them): the
        # host's bundle goes in as a build secret (deploy.sh), never into a layer.
        if not env.get("PIP_CERT") and Path(SYSTEM_CA_BUNDLE).is_file():
            env["PIP_CERT"] = SYSTEM_CA_BUNDLE
        return env

    def prepare(self) -> None:
        self.workdir.mkdir(parents=True)
        copy_working_tree(self.workdir)
        password = secrets.token_hex(16)
        overrides = {
            "SECRET_KEY": secrets.token_hex(32),
            "POSTGRES_PASSWORD": password,
            "DATABASE_URL": f"postgresql+asyncpg://conduit:{password}@postgres:5432/conduit",
            "METRICS_TOKEN": secrets.token_hex(16),
            "HTTP_PORT": str(self.http_port),
            "HTTPS_PORT": str(free_port()),
            "POSTGRES_IMAGE": self.images["postgres"],
            "REDIS_IMAGE": self.images["redis"],
            "NGINX_IMAGE": self.images["nginx"],
            "PROMETHEUS_IMAGE": self.images["prometheus"],
            "ALERTMANAGER_IMAGE": self.images["alertmanager"],
            "PROMETHEUS_PORT": str(self.prometheus_port),
            "ALERTMANAGER_PORT": str(free_port()),
            # 16 clients share one address: per-address limits would answer 429, not the point.
            "NGINX_API_RATE": "5000r/s",
            "NGINX_AUTH_RATE": "6000r/m",
            "RATE_LIMIT_DEFAULT": "100000/minute",
            "RATE_LIMIT_WRITE": "100000/minute",
            "RATE_LIMIT_LOGIN": "100000/minute",
            "RATE_LIMIT_REGISTER": "100000/minute",
        }
        example = (self.workdir / ".env.example").read_text()
        (self.workdir / ".env").write_text(production_env(example, overrides))
        self.git("init", "--quiet", "--initial-branch=main")
        self.git("add", "--all")
        self.git("commit", "--quiet", "--message", "e2e: the release under test")

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=e2e", "-c", "user.email=e2e@localhost", *args],
            cwd=self.workdir,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def head(self) -> str:
        return self.git("rev-parse", "--short=12", "HEAD").strip()

    def commit(self, message: str, edits: Mapping[str, Callable[[str], str]]) -> str:
        """A new release: each path's text passed through its edit (a new file starts empty)."""
        for relative, edit in edits.items():
            path = self.workdir / relative
            path.write_text(edit(path.read_text() if path.exists() else ""))
        self.git("add", "--all")
        self.git("commit", "--quiet", "--message", message)
        return self.head()

    def drop_last_commit(self) -> None:
        """Forget a failed release, as an operator would revert it."""
        self.git("reset", "--quiet", "--hard", "HEAD~1")

    def deploy(self, *args: str, label: str, **env: str) -> DeployRun:
        command = ("./deploy.sh", *args)
        started = time.monotonic()
        result = subprocess.run(
            ["bash", *command],
            cwd=self.workdir,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        run = DeployRun(
            command, result.returncode, result.stdout + result.stderr, time.monotonic() - started
        )
        self.logs.mkdir(parents=True, exist_ok=True)
        (self.logs / f"{len(self.runs):02d}-{label}.log").write_text(run.output)
        self.runs.append(run)
        return run

    def compose(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            [
                "docker",
                "compose",
                "--project-name",
                PROJECT,
                "--env-file",
                ".env",
                "-f",
                "docker-compose.production.yml",
                *args,
            ],
            cwd=self.workdir,
            env={**self.env, "CONDUIT_ENV_FILE": ".env"},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"compose {' '.join(args)}: {result.stderr}")
        return result.stdout

    def inspect(self, container: str) -> dict[str, Any]:
        parsed: list[dict[str, Any]] = json.loads(self.engine.docker("inspect", container))
        return parsed[0]

    def inspect_network(self, network: str) -> dict[str, Any]:
        parsed: list[dict[str, Any]] = json.loads(self.engine.docker("network", "inspect", network))
        return parsed[0]

    def app_containers(self) -> list[AppContainer]:
        found = []
        for container_id in self.compose("ps", "--quiet", "app").split():
            info = self.inspect(container_id)
            health = (info["State"].get("Health") or {}).get("Status", "none")
            found.append(
                AppContainer(
                    id=container_id,
                    name=info["Name"].lstrip("/"),
                    tag=info["Config"]["Image"].rsplit(":", 1)[-1],
                    user=info["Config"]["User"],
                    health=health,
                    pid=int(info["State"]["Pid"]),
                    restarts=int(info["RestartCount"]),
                )
            )
        return found

    def psql(self, sql: str) -> str:
        """One query in the postgres container, as the app's role; the text of the answer."""
        return self.compose(
            "exec", "-T", "postgres", "psql", "-U", "conduit", "-d", "conduit", "-tAc", sql
        ).strip()

    def service_container(self, service: str) -> dict[str, Any]:
        [container_id] = self.compose("ps", "--quiet", service).split()
        return self.inspect(container_id)

    def down(self) -> None:
        """Every container's log kept under logs/ (for a failure's post-mortem), then all gone,
        the `monitoring` profile's too."""
        self.logs.mkdir(parents=True, exist_ok=True)
        everything = ("--profile", "monitoring")
        logs = self.compose(*everything, "logs", "--no-color", "--timestamps", check=False)
        (self.logs / "services.log").write_text(logs)
        self.compose(
            *everything, "down", "--volumes", "--remove-orphans", "--timeout", "5", check=False
        )
