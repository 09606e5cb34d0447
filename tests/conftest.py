"""Test harness: real PostgreSQL and Redis servers for the session, the schema built by the
Alembic chain, and one rolled-back transaction per test.

Each API test talks HTTP to the app through httpx's ASGI transport; the app's session factory is
bound to the test's connection with savepoints, so the app's commits never outlive the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient
from sqlalchemy.ext.asyncio import AsyncConnection

from devstack.s3 import MotoS3Server
from devstack.servers import PostgresServer, RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
TEST_DATABASE = "conduit_test"
TEST_SECRET = "test-secret-key-that-is-long-enough-0123456789"


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="conduit-tests-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres(workdir: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(workdir / "pg" / "data", free_port())
    server.start()
    server.create_database(TEST_DATABASE)
    yield server
    server.stop("immediate")


@pytest.fixture(scope="session")
def redis_server(workdir: Path) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), workdir / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoS3Server]:
    """moto's S3 emulator (devstack/s3.py, in a virtualenv of its own made on first use); tests
    use a bucket of their own, not a reset."""
    with MotoS3Server() as server:
        yield server


@pytest.fixture(scope="session")
def database_url(postgres: PostgresServer) -> str:
    return postgres.url(TEST_DATABASE)


def alembic(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real Alembic CLI against `database_url` (as `make migrate` does)."""
    env = {**os.environ, "DATABASE_URL": database_url, "LOG_FORMAT": "json"}
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )


@pytest.fixture(scope="session")
def migrated(database_url: str) -> str:
    alembic(database_url, "upgrade", "head")
    return database_url


@pytest.fixture(scope="session")
def base_env(migrated: str, redis_server: RedisServer) -> dict[str, str]:
    """Environment for an app under test; also what live-server tests pass to uvicorn."""
    return {
        "APP_ENV": "test",
        "SECRET_KEY": TEST_SECRET,
        "DATABASE_URL": migrated,
        "REDIS_URL": redis_server.url,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "DB_STARTUP_TIMEOUT": "5",
        # Rate-limit tests switch limits on with their own figures; elsewhere they would turn a
        # test that makes many requests from one address into a flaky 429.
        "RATE_LIMIT_ENABLED": "false",
    }


@pytest.fixture(scope="session")
def settings_factory(base_env: dict[str, str]):  # type: ignore[no-untyped-def]
    from app.core.config import Settings

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = dict(base_env)
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[arg-type]

    return make


@pytest.fixture(scope="session")
async def app(settings_factory):  # type: ignore[no-untyped-def]
    from app.main import create_app

    application = create_app(settings_factory())
    async with LifespanManager(application):
        yield application


@pytest.fixture
async def db_connection(app) -> AsyncIterator[AsyncConnection]:  # type: ignore[no-untyped-def]
    from tests.support.databases import rolled_back_sessions

    async with rolled_back_sessions(app.state.resources) as connection:
        yield connection


@pytest.fixture
async def client(app, db_connection: AsyncConnection) -> AsyncIterator[AsyncClient]:  # type: ignore[no-untyped-def]
    resources = app.state.resources
    if resources.redis.enabled:
        await resources.redis.client.flushdb()
    transport = ASGITransport(app=app, raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http
