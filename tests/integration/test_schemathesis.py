"""A bounded schemathesis run against the live app's own OpenAPI document: no 5xx, and every
response (status, content type, body) matches what the document publishes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.live import LiveServer

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    ]
)


@pytest.fixture(scope="module")
def server(base_env: dict[str, str]) -> Iterator[LiveServer]:
    with LiveServer({**base_env, "LOG_LEVEL": "WARNING"}) as live:
        yield live


def _token(server: LiveServer) -> str:
    user = {"username": "fuzzer", "email": "fuzzer@example.com", "password": "fuzzing-password"}
    response = httpx.post(f"{server.url}/api/users", json={"user": user}, timeout=10)
    if response.status_code == 422:  # registered by an earlier run against this database
        response = httpx.post(f"{server.url}/api/users/login", json={"user": user}, timeout=10)
    response.raise_for_status()
    return str(response.json()["user"]["token"])


def test_api_conforms_to_its_openapi_document(server: LiveServer, tmp_path: Path) -> None:
    command = [
        str(Path(sys.executable).parent / "schemathesis"), "run",
        f"{server.url}/openapi.json",
        "--header", f"Authorization: Token {_token(server)}",
        "--checks", CHECKS,
        "--include-path-regex", "^/api/",
        "--max-examples", "25",
        "--seed", "20261126",
        # One worker: schemathesis builds schemas with `ast` in its worker threads, and CPython
        # 3.11's ast constructor is not thread-safe ("AST constructor recursion depth mismatch").
        "--workers", "1",
        "--request-timeout", "10",
        "--no-color",
        "--report-dir", str(tmp_path),
        "--generation-database", "none",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
