"""A real streaming replica of a `PostgresServer`, for the read-replica tests and the bench.

`pg_basebackup -R` copies the primary and writes `standby.signal` plus the `primary_conninfo`
to stream from it; the copy then starts as a hot standby. The primary needs what initdb's
defaults already give (`wal_level=replica`, `max_wal_senders=10`, and a `replication` line
for 127.0.0.1 in pg_hba.conf); `PostgresServer.start` also sets the first two explicitly.
"""

from __future__ import annotations

import time
from pathlib import Path

from devstack.servers import PostgresServer


class PostgresReplica(PostgresServer):
    def __init__(self, datadir: Path, port: int, primary: PostgresServer) -> None:
        super().__init__(datadir, port)
        self.primary = primary

    def init(self) -> None:
        self._prepare_dirs()
        self._run(
            "pg_basebackup",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.primary.port),
            "-U",
            "postgres",
            "-D",
            str(self.datadir),
            "-R",  # standby.signal + primary_conninfo: start as a streaming replica
            "-X",
            "stream",
            "--checkpoint=fast",
            "--no-sync",
        )

    def pause_replay(self) -> None:
        self.query("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        self.query("SELECT pg_wal_replay_resume()")

    def wait_streaming(self, timeout: float = 30.0) -> None:
        """Until the WAL receiver streams and everything the primary wrote so far is replayed.

        A synchronous commit that wrote something first flushes all the WAL before it (the
        test primary commits asynchronously, and an idle one may hold a written record
        unflushed for seconds; a commit that wrote nothing else is not flushed).
        """
        self.primary.query(
            "SET synchronous_commit = on;"
            " CREATE TABLE IF NOT EXISTS devstack_wal_flush (at timestamptz);"
            " INSERT INTO devstack_wal_flush VALUES (now())"
        )
        target = self.primary.query("SELECT pg_current_wal_flush_lsn()")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            caught_up = self.query(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming')"
                f" AND pg_last_wal_replay_lsn() >= '{target}'::pg_lsn"
            )
            if caught_up == "t":
                return
            time.sleep(0.05)
        raise TimeoutError(f"replica on port {self.port} did not catch up in {timeout}s")
