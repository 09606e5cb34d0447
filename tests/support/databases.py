"""Databases for tests: a fresh, migrated one on the session's Postgres (live servers that
commit for real), or the app's sessions joined to one transaction rolled back at the end."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from app.api.state import Resources
from devstack.servers import PostgresServer
from tests.conftest import alembic


def fresh_database(postgres: PostgresServer, prefix: str = "conduit_live") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    postgres.create_database(name)
    url = postgres.url(name)
    alembic(url, "upgrade", "head")
    return url


@asynccontextmanager
async def rolled_back_sessions(resources: Resources) -> AsyncIterator[AsyncConnection]:
    """Every session the app opens joins one transaction (as savepoints), rolled back at the
    end: a test's writes vanish without emptying tables."""
    connection = await resources.engine.connect()
    transaction = await connection.begin()
    original = resources.session_factory
    resources.session_factory = async_sessionmaker(
        bind=connection,
        class_=AsyncSession,
        expire_on_commit=False,
        autoflush=False,
        join_transaction_mode="create_savepoint",
    )
    try:
        yield connection
    finally:
        resources.session_factory = original
        await transaction.rollback()
        await connection.close()
