"""Lists, the feed and single articles cost a fixed number of SQL statements per request,
whatever the page size (no N+1): counted on the real connection.

Hot reads go straight to asyncpg (`app/repositories/driver.py`) and never reach SQLAlchemy's
events, so statements are counted where they leave: asyncpg's query logger on the driver
connection every request of the test uses, plus SQLAlchemy's `before_cursor_execute` for what
still goes through SQLAlchemy (it sends prepared statements, which the query logger misses).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection

from tests.api.helpers import auth, create_article, register

ARTICLES = 25


@asynccontextmanager
async def count_statements(connection: AsyncConnection) -> AsyncIterator[list[str]]:
    """Every statement sent on `connection`, which the harness binds each request's session to."""
    statements: list[str] = []

    def record(statement: str) -> None:
        # The harness wraps each request in a savepoint; production has none of those.
        if not statement.lstrip().upper().startswith(("SAVEPOINT", "RELEASE", "ROLLBACK TO")):
            statements.append(statement)

    def from_sqlalchemy(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        record(statement)

    def from_asyncpg(query: Any) -> None:
        record(query.query)

    driver: Any = (await connection.get_raw_connection()).driver_connection
    driver.add_query_logger(from_asyncpg)
    event.listen(connection.sync_engine, "before_cursor_execute", from_sqlalchemy)
    try:
        yield statements
        # asyncpg hands each query to its loggers with loop.call_soon: let those calls run.
        await asyncio.sleep(0)
    finally:
        event.remove(connection.sync_engine, "before_cursor_execute", from_sqlalchemy)
        driver.remove_query_logger(from_asyncpg)


@pytest.fixture
async def reader(client: AsyncClient) -> str:
    """A reader who follows several authors who each wrote, tagged and were favourited."""
    reader = await register(client)
    for a in range(5):
        author = await register(client)
        await client.post(
            f"/api/profiles/{author['username']}/follow", headers=auth(reader["token"])
        )
        for i in range(ARTICLES // 5):
            article = await create_article(
                client, author["token"], title=f"A{a} {i}", tagList=[f"t{i}", f"u{a}", "all"]
            )
            if i % 2:
                await client.post(
                    f"/api/articles/{article['slug']}/favorite", headers=auth(reader["token"])
                )
    return str(reader["token"])


async def _statements(
    app: FastAPI, db_connection: AsyncConnection, client: AsyncClient, url: str, token: str
) -> int:
    """Statements of a read that finds nothing cached (Redis emptied first): Postgres's share."""
    await app.state.resources.redis.client.flushdb()
    async with count_statements(db_connection) as statements:
        response = await client.get(url, headers=auth(token))
    assert response.status_code == 200, response.text
    return len(statements)


@pytest.mark.parametrize("path", ["/api/articles", "/api/articles/feed"])
async def test_page_of_1_and_page_of_20_cost_the_same(
    app: FastAPI, db_connection: AsyncConnection, client: AsyncClient, reader: str, path: str
) -> None:
    one = await _statements(app, db_connection, client, f"{path}?limit=1", reader)
    twenty = await _statements(app, db_connection, client, f"{path}?limit=20", reader)
    filtered = await _statements(app, db_connection, client, f"{path}?limit=20&tag=all", reader)
    assert one == twenty
    assert 1 <= filtered <= 3
    assert 1 <= twenty <= 3  # the page and its total (counted but never zero: the count works)


async def test_single_article_is_one_statement(
    app: FastAPI, db_connection: AsyncConnection, client: AsyncClient, reader: str
) -> None:
    slug = (await client.get("/api/articles?limit=1")).json()["articles"][0]["slug"]
    assert await _statements(app, db_connection, client, f"/api/articles/{slug}", reader) == 1


async def test_comments_cost_is_fixed(
    app: FastAPI, db_connection: AsyncConnection, client: AsyncClient, reader: str
) -> None:
    slug = (await client.get("/api/articles?limit=1")).json()["articles"][0]["slug"]
    few = await _statements(app, db_connection, client, f"/api/articles/{slug}/comments", reader)
    for i in range(10):
        user = await register(client)
        await client.post(
            f"/api/articles/{slug}/comments",
            json={"comment": {"body": f"c{i}"}},
            headers=auth(user["token"]),
        )
    many = await _statements(app, db_connection, client, f"/api/articles/{slug}/comments", reader)
    assert few == many == 2


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("POST", "/favorite", None),
        ("DELETE", "/favorite", None),
        ("POST", "/comments", {"comment": {"body": "One statement, its own transaction."}}),
    ],
)
async def test_each_write_of_the_write_mix_is_one_statement(
    db_connection: AsyncConnection,
    client: AsyncClient,
    reader: str,
    method: str,
    suffix: str,
    body: dict[str, object] | None,
) -> None:
    """A favourite, an unfavourite and a comment: one statement each, answering the response's
    data too, with no BEGIN and COMMIT around it (a single statement is its own transaction)."""
    slug = (await client.get("/api/articles?limit=1")).json()["articles"][0]["slug"]
    url = f"/api/articles/{slug}{suffix}"
    async with count_statements(db_connection) as statements:
        response = await client.request(method, url, json=body, headers=auth(reader))
    assert response.status_code == 200, response.text
    assert len(statements) == 1, statements
    assert not statements[0].lstrip().upper().startswith(("BEGIN", "COMMIT"))
