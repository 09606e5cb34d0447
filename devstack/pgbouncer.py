"""A real PgBouncer in front of a `PostgresServer`, for the transaction-pooling tests.

Debian's `pgbouncer` package (1.18 on bookworm) provides the binary. PgBouncer refuses to run
as root, so as root it runs as the same unprivileged user as Postgres, with its files made
readable for it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from devstack.servers import UNPRIVILEGED_USER, PostgresServer, wait_for_port


def pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer") or next(
        (path for path in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if Path(path).exists()),
        None,
    )


class PgBouncerServer:
    def __init__(
        self,
        port: int,
        workdir: Path,
        upstream: PostgresServer,
        *,
        pool_mode: str = "transaction",
        pool_size: int = 4,
        ignore_startup_parameters: tuple[str, ...] = (),
    ) -> None:
        binary = pgbouncer_binary()
        if binary is None:
            raise RuntimeError("no pgbouncer binary: install the Debian package pgbouncer")
        self.binary = binary
        self.port = port
        self.workdir = workdir
        self.upstream = upstream
        self.pool_mode = pool_mode
        self.pool_size = pool_size
        self.ignore_startup_parameters = ignore_startup_parameters
        self.run_as = UNPRIVILEGED_USER if os.geteuid() == 0 else None
        self.logfile = workdir / "pgbouncer.log"
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def _write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        users = self.workdir / "userlist.txt"
        users.write_text('"postgres" ""\n')
        config = self.workdir / "pgbouncer.ini"
        config.write_text(
            "\n".join(
                [
                    "[databases]",
                    f"* = host=127.0.0.1 port={self.upstream.port}",
                    "[pgbouncer]",
                    "listen_addr = 127.0.0.1",
                    f"listen_port = {self.port}",
                    "unix_socket_dir =",
                    "auth_type = trust",
                    f"auth_file = {users}",
                    f"pool_mode = {self.pool_mode}",
                    # Few server connections for many clients: what transaction pooling is for,
                    # and what makes a client's statements land on another client's server.
                    f"default_pool_size = {self.pool_size}",
                    "max_client_conn = 500",
                    f"logfile = {self.logfile}",
                    "admin_users = postgres",
                    f"ignore_startup_parameters = {', '.join(self.ignore_startup_parameters)}",
                    "",
                ]
            )
        )
        if self.run_as:
            owner = pwd.getpwnam(self.run_as)
            for path in (self.workdir, users, config):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        return config

    def start(self) -> PgBouncerServer:
        config = self._write_config()
        self.process = subprocess.Popen(
            [self.binary, str(config)],
            user=self.run_as,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""
