"""docs/security.md names a test for every threat: each name must be a test that exists, so the
table cannot promise a proof that was renamed or deleted."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
THREAT_MODEL = ROOT / "docs" / "security.md"
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)(?:\[[^\]`]*\])?`")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")
    }


def test_every_named_test_exists() -> None:
    references = REFERENCE.findall(THREAT_MODEL.read_text())
    assert len(references) >= 40, "the threat model names too few tests"
    missing = [
        f"{path}::{name}"
        for path, name in references
        if not (ROOT / path).is_file() or name not in _tests_in(ROOT / path)
    ]
    assert missing == []


def test_every_row_of_the_tables_names_a_test() -> None:
    rows = [
        line
        for line in THREAT_MODEL.read_text().splitlines()
        if line.startswith("| ")
        and not line.startswith(("| Threat", "| STRIDE", "| Risk"))
        and not set(line) <= set("|- ")
    ]
    threat_rows = [row for row in rows if row.count("|") >= 5]
    assert threat_rows, "no threat table found"
    without = [row for row in threat_rows if not REFERENCE.search(row)]
    assert without == []
