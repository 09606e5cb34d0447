"""A fresh, migrated database on the session's Postgres, for live servers that commit for real."""

from __future__ import annotations

import uuid

from devstack.servers import PostgresServer
from tests.conftest import alembic


def fresh_database(postgres: PostgresServer, prefix: str = "conduit_live") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    postgres.create_database(name)
    url = postgres.url(name)
    alembic(url, "upgrade", "head")
    return url
