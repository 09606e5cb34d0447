"""The Alembic chain on an empty database: upgrade head, no drift from the models, downgrade
base leaves nothing behind."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

import app.models  # noqa: F401 - registers every table on Base.metadata
from app.db.base import Base
from devstack.servers import PostgresServer
from tests.conftest import alembic

pytestmark = pytest.mark.slow


@pytest.fixture
def empty_database(postgres: PostgresServer) -> Iterator[str]:
    name = f"migrations_{uuid.uuid4().hex[:12]}"
    postgres.create_database(name)
    yield postgres.url(name)
    postgres.drop_database(name)


async def _run(url: str, inspect_with: Any) -> Any:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(inspect_with)
    finally:
        await engine.dispose()


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


def _diff(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(
        conn, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, Base.metadata))


def _enum_types(conn: Connection) -> list[str]:
    rows = conn.execute(
        text(
            "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
            "WHERE n.nspname = 'public' AND t.typtype = 'e'"
        )
    )
    return [row[0] for row in rows]


async def test_upgrade_check_and_downgrade(empty_database: str) -> None:
    assert await _run(empty_database, _tables) == set()

    alembic(empty_database, "upgrade", "head")
    tables = await _run(empty_database, _tables)
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables

    diff = await _run(empty_database, _diff)
    assert diff == [], f"the models and the migrations disagree: {diff}"
    check = alembic(empty_database, "check")
    assert check.returncode == 0

    # Idempotent: a second migrator finds nothing to do.
    alembic(empty_database, "upgrade", "head")

    alembic(empty_database, "downgrade", "base")
    assert await _run(empty_database, _tables) == {"alembic_version"}
    assert await _run(empty_database, _enum_types) == []

    # And the chain applies again after a full downgrade.
    alembic(empty_database, "upgrade", "head")
    assert set(Base.metadata.tables) <= await _run(empty_database, _tables)
