"""Async Alembic environment: the URL comes from the app's settings, the metadata from the
models, and every run holds a Postgres advisory lock so two migrators cannot race."""

from __future__ import annotations

import asyncio

from sqlalchemy import pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

import app.models  # noqa: F401 - registers every table on Base.metadata
from alembic import context
from app.core.config import get_settings
from app.core.logging_config import configure_logging
from app.db.base import Base

# Any constant shared by every migrator of this database; "conduit" in ASCII.
MIGRATION_LOCK_ID = 0x636F6E64756974

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or get_settings().DATABASE_URL


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _run_sync(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    # Held by the session, not a transaction: online migrations commit part-way (batched
    # backfills, CREATE INDEX CONCURRENTLY), and a second migrator must keep waiting through
    # those. It waits, then finds nothing to do; the lock goes with the connection at the latest.
    connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
    connection.commit()
    try:
        with context.begin_transaction():
            context.run_migrations()
    finally:
        connection.rollback()  # whatever a failure left open, so the unlock can run
        connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
        connection.commit()


async def run_migrations_online() -> None:
    engine = create_async_engine(_url(), poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(_run_sync)
    await engine.dispose()


if config.attributes.get("configure_logging", True):
    settings = get_settings()
    configure_logging(level=settings.LOG_LEVEL, log_format=settings.log_format)

if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
