"""`make run`'s local cluster: a taken port is reported plainly, not as a pg_ctl traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.servers import PortInUseError, ensure_postgres


def test_a_taken_port_is_named_with_what_to_do(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        port = squatter.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"port {port} is already in use.*PG_PORT"):
            ensure_postgres(tmp_path / "postgres", port)
        command = [sys.executable, "-m", "devstack.servers", "ensure-postgres"]
        result = subprocess.run(
            [*command, str(tmp_path / "postgres"), str(port)],
            capture_output=True,
            text=True,
            check=False,
        )
    assert result.returncode == 1
    assert result.stdout == ""  # the Makefile takes stdout as the DATABASE_URL
    assert "PG_PORT" in result.stderr
    assert "Traceback" not in result.stderr
