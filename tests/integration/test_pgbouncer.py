"""The app through a real PgBouncer in transaction mode (Debian's pgbouncer, 1.18 on bookworm:
no prepared-statement support in that mode), with DB_PGBOUNCER_TRANSACTION_MODE=true.

PgBouncer gets 4 server connections for the app's 20 pooled clients, so consecutive statements of
one client routinely run on different servers, and one server runs many clients' statements:
exactly where a prepared statement left behind, or expected, breaks. Reads and writes run
concurrently; every response must be a success, and afterwards no server connection may hold a
prepared statement (with SQLAlchemy's documented uuid names they piled up, ~0.35 a request).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from httpx import AsyncClient, Response
from sqlalchemy.engine import make_url

from devstack.pgbouncer import PgBouncerServer, pgbouncer_binary
from devstack.servers import PostgresServer, free_port
from tests.api.helpers import auth
from tests.support.apps import serve
from tests.support.databases import fresh_database

pytestmark = pytest.mark.slow

ROUNDS = 4
USERS = 6


@pytest.fixture(scope="module")
def pgbouncer(postgres: PostgresServer, workdir: Path) -> Iterator[PgBouncerServer]:
    if pgbouncer_binary() is None:
        pytest.skip("pgbouncer is missing: install the Debian package pgbouncer")
    server = PgBouncerServer(free_port(), workdir / "pgbouncer", postgres, pool_size=4)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pooled_database(postgres: PostgresServer) -> str:
    # Migrations run against Postgres itself, as DEPLOYMENT.md says to (DDL and session state).
    return make_url(fresh_database(postgres, "conduit_pgbouncer")).database or ""


def succeeded(response: Response) -> Response:
    assert response.status_code < 400, (response.request.url, response.status_code, response.text)
    return response


async def signup(http: AsyncClient) -> dict[str, Any]:
    name = f"b{uuid.uuid4().hex[:10]}"
    user = {"username": name, "email": f"{name}@example.com", "password": "x" * 12}
    body: dict[str, Any] = succeeded(await http.post("/api/users", json={"user": user})).json()
    return body["user"]  # type: ignore[no-any-return]


async def one_users_round(
    http: AsyncClient, me: dict[str, Any], others: list[dict[str, Any]], round_: int
) -> None:
    token = auth(me["token"])
    article = {"title": f"{me['username']} {round_}", "description": "d", "body": "b"}
    article["tagList"] = ["pooled", f"round{round_}"]  # type: ignore[assignment]
    made = succeeded(await http.post("/api/articles", json={"article": article}, headers=token))
    slug = made.json()["article"]["slug"]
    other = others[round_ % len(others)]
    requests = [
        http.get(f"/api/articles/{slug}", headers=token),
        http.get(f"/api/articles/{slug}"),
        http.post(
            f"/api/articles/{slug}/comments",
            json={"comment": {"body": "pooled"}},
            headers=token,
        ),
        http.get(f"/api/articles/{slug}/comments", headers=token),
        http.post(f"/api/articles/{slug}/favorite", headers=auth(other["token"])),
        http.post(f"/api/profiles/{other['username']}/follow", headers=token),
        http.get("/api/articles/feed", headers=token),
        http.get(f"/api/articles?author={me['username']}", headers=token),
        http.get("/api/articles?tag=pooled"),
        http.get(f"/api/profiles/{other['username']}", headers=token),
        http.get("/api/user", headers=token),
        http.get("/api/tags"),
    ]
    for response in await asyncio.gather(*requests):
        succeeded(response)


async def test_reads_and_writes_through_pgbouncer_in_transaction_mode(
    settings_factory: Any, pgbouncer: PgBouncerServer, pooled_database: str
) -> None:
    settings = settings_factory(
        DATABASE_URL=pgbouncer.url(pooled_database),
        DB_PGBOUNCER_TRANSACTION_MODE=True,
        DB_POOL_SIZE=20,
        DB_MAX_OVERFLOW=0,
        DB_POOL_TIMEOUT=10,
    )
    async with serve(settings) as http:
        users = [await signup(http) for _ in range(USERS)]
        for round_ in range(ROUNDS):
            await asyncio.gather(
                *(
                    one_users_round(http, me, [u for u in users if u is not me], round_)
                    for me in users
                )
            )
        # Everything written is there, read back through the pooler.
        listed = succeeded(await http.get("/api/articles?tag=pooled&limit=100")).json()
        assert listed["articlesCount"] == USERS * ROUNDS
        feed = succeeded(await http.get("/api/articles/feed", headers=auth(users[0]["token"])))
        assert feed.json()["articlesCount"] > 0
        readiness = succeeded(await http.get("/health/readiness"))
        assert readiness.json()["status"] == "ok"
    assert "ERROR" not in pgbouncer.log(), pgbouncer.log()[-2000:]
    # Nothing stayed prepared on any server connection (each statement was unnamed).
    left = await prepared_on_each_server(pgbouncer, pooled_database)
    assert len(left) == pgbouncer.pool_size
    assert set(left.values()) == {0}, left


async def prepared_on_each_server(pgbouncer: PgBouncerServer, database: str) -> dict[int, int]:
    """{server backend pid: prepared statements it holds}, for every server connection:
    one client per server, each inside a transaction so that none is given back meanwhile."""
    clients = [
        await asyncpg.connect(
            host="127.0.0.1",
            port=pgbouncer.port,
            user="postgres",
            database=database,
            statement_cache_size=0,
        )
        for _ in range(pgbouncer.pool_size)
    ]
    try:
        counts = {}
        for client in clients:
            await client.execute("BEGIN")
            row = await client.fetchrow(
                "SELECT pg_backend_pid() AS pid, count(*) AS held FROM pg_prepared_statements"
            )
            counts[row["pid"]] = row["held"]
        return counts
    finally:
        for client in clients:
            await client.close()


def test_the_harness_pools_in_transaction_mode(pgbouncer: PgBouncerServer) -> None:
    """Guards the test above: with session pooling it would prove nothing."""
    config = (pgbouncer.workdir / "pgbouncer.ini").read_text()
    assert "pool_mode = transaction" in config
    assert "default_pool_size = 4" in config
