"""The memory limit the RSS alert divides by: the cgroup's, or the machine's RAM without one."""

from __future__ import annotations

from pathlib import Path

import psutil

from app.observability.system import memory_limit_bytes


def test_cgroup_v2_limit(tmp_path: Path) -> None:
    limit = tmp_path / "memory.max"
    limit.write_text("536870912\n")
    assert memory_limit_bytes((str(limit),)) == 512 * 1024 * 1024


def test_unlimited_cgroup_means_the_machine(tmp_path: Path) -> None:
    limit = tmp_path / "memory.max"
    limit.write_text("max\n")
    assert memory_limit_bytes((str(limit),)) == psutil.virtual_memory().total


def test_v1_unlimited_is_capped_at_the_machine(tmp_path: Path) -> None:
    limit = tmp_path / "memory.limit_in_bytes"
    limit.write_text("9223372036854771712\n")
    assert memory_limit_bytes((str(tmp_path / "absent"), str(limit))) == (
        psutil.virtual_memory().total
    )


def test_no_cgroup_files(tmp_path: Path) -> None:
    assert memory_limit_bytes((str(tmp_path / "absent"),)) == psutil.virtual_memory().total
