"""GET reads served by a real streaming replica (pg_basebackup -R from the session's Postgres).

The apps here commit for real, in a database of their own (the replica streams the whole
cluster), and each is built in-process with its lifespan (the replica checks run in it). Which
server ran a read is read from the servers' own logs: the database has `log_statement = all`
(a per-database setting, replicated like any catalog change), so each server logs every
statement it executed.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from httpx import AsyncClient
from redis.asyncio import Redis
from sqlalchemy.engine import make_url

from devstack.postgres_replica import PostgresReplica
from devstack.servers import PostgresServer, free_port
from tests.api.helpers import auth, create_article
from tests.integration.conftest import OUTAGE_DATABASE
from tests.support.apps import serve
from tests.support.databases import fresh_database

pytestmark = pytest.mark.slow

LOG_ENTRY = re.compile(r"\n(?=\d{4}-\d\d-\d\d )")
EXECUTED = re.compile(r"LOG:  (execute [^:]*|statement): ")
COMMENTS_READ = "FROM comments"  # in the one statement that lists an article's comments
ServeReplicated = Callable[..., AbstractAsyncContextManager[AsyncClient]]


@pytest.fixture(scope="module")
def replicated_url(postgres: PostgresServer) -> str:
    url = fresh_database(postgres, "conduit_replicas")
    database = make_url(url).database
    postgres.query(f"ALTER DATABASE \"{database}\" SET log_statement = 'all'")
    return url


@pytest.fixture(scope="module")
def replica(
    postgres: PostgresServer, replicated_url: str, workdir: Path
) -> Iterator[PostgresReplica]:
    if not (postgres.bindir / "pg_basebackup").exists():
        pytest.skip("pg_basebackup is missing: install the Debian package postgresql")
    server = PostgresReplica(workdir / "pg-replica" / "data", free_port(), postgres)
    server.start()
    server.wait_streaming()
    yield server
    server.stop("immediate")


@pytest.fixture
def serve_replicated(
    settings_factory: Any, replicated_url: str, replica: PostgresReplica
) -> ServeReplicated:
    database = make_url(replicated_url).database or ""

    def build(**overrides: object) -> AbstractAsyncContextManager[AsyncClient]:
        settings = settings_factory(
            DATABASE_URL=replicated_url,
            DATABASE_REPLICA_URLS=replica.url(database),
            DATABASE_REPLICA_CHECK_SECONDS=0.2,
            **overrides,
        )
        return serve(settings)

    return build


class LogWatch:
    """Counts the statements a server logged from now on that contain `fragment`."""

    def __init__(self, server: PostgresServer) -> None:
        self.path = server.logfile
        self.start = self.path.stat().st_size

    def count(self, fragment: str) -> int:
        with self.path.open("rb") as log:
            log.seek(self.start)
            text = log.read().decode(errors="replace")
        entries = LOG_ENTRY.split(text)  # a statement's lines after the first are indented
        return sum(1 for entry in entries if fragment in entry and EXECUTED.search(entry))


async def signup(http: AsyncClient) -> dict[str, Any]:
    name = f"r{uuid.uuid4().hex[:10]}"
    user = {"username": name, "email": f"{name}@example.com", "password": "x" * 12}
    response = await http.post("/api/users", json={"user": user})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()["user"]
    return body


async def replica_status(http: AsyncClient) -> dict[str, Any]:
    response = await http.get("/health/detailed")
    assert response.status_code == 200, response.text
    replicas: list[dict[str, Any]] = response.json()["replicas"]
    assert len(replicas) == 1
    return replicas[0]


async def wait_for_replica(http: AsyncClient, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        current = await replica_status(http)
        if current["status"] == status or time.monotonic() > deadline:
            assert current["status"] == status, current
            return current
        await asyncio.sleep(0.1)


def commit_marker(postgres: PostgresServer) -> None:
    """A committed transaction, so the replica's last replayed commit is a fresh one."""
    postgres.query("SELECT txid_current()")


async def test_reads_are_served_by_the_replica(
    serve_replicated: ServeReplicated, postgres: PostgresServer, replica: PostgresReplica
) -> None:
    async with serve_replicated() as http:
        writer, reader = await signup(http), await signup(http)
        article = await create_article(http, writer["token"], title="Served by a replica")
        comments = f"/api/articles/{article['slug']}/comments"
        posted = await http.post(
            comments, json={"comment": {"body": "first"}}, headers=auth(writer["token"])
        )
        assert posted.status_code == 200, posted.text
        replica.wait_streaming()
        await wait_for_replica(http, "ok")

        on_primary, on_replica = LogWatch(postgres), LogWatch(replica)
        signed_in = auth(reader["token"])
        headers: dict[str, str]
        for headers in [{}] * 5 + [signed_in] * 5:
            response = await http.get(comments, headers=headers)
            assert response.status_code == 200, response.text
            assert [c["body"] for c in response.json()["comments"]] == ["first"]
        feed = await http.get("/api/articles/feed", headers=auth(reader["token"]))
        assert feed.status_code == 200
        assert on_replica.count(COMMENTS_READ) == 10
        assert on_primary.count(COMMENTS_READ) == 0

        # The writer wrote a moment ago: their reads go to the primary (read-your-writes).
        mine = await http.get(comments, headers=auth(writer["token"]))
        assert mine.status_code == 200
        assert on_replica.count(COMMENTS_READ) == 10
        assert on_primary.count(COMMENTS_READ) == 1


async def test_writer_reads_own_writes_through_a_paused_replica_on_any_instance(
    serve_replicated: ServeReplicated, postgres: PostgresServer, replica: PostgresReplica
) -> None:
    async with (
        serve_replicated(DATABASE_REPLICA_MAX_LAG_SECONDS=2) as first,
        serve_replicated(DATABASE_REPLICA_MAX_LAG_SECONDS=2) as second,
    ):
        author = await signup(first)
        theirs = await create_article(first, author["token"], title="Someone else's")
        writer = await signup(first)
        replica.wait_streaming()
        await wait_for_replica(first, "ok")
        await wait_for_replica(second, "ok")

        # Paused right after a fresh commit was replayed, so the lag counts from now.
        commit_marker(postgres)
        replica.wait_streaming()
        replica.pause_replay()
        try:
            token = auth(writer["token"])
            mine = await create_article(first, writer["token"], title="Written while paused")
            comments = f"/api/articles/{theirs['slug']}/comments"
            said = await first.post(comments, json={"comment": {"body": "mine"}}, headers=token)
            assert said.status_code == 200, said.text
            followed = await first.post(f"/api/profiles/{author['username']}/follow", headers=token)
            assert followed.status_code == 200, followed.text

            # Anonymous readers are still served by the replica, within the lag limit: it has
            # not replayed the comment.
            assert (await replica_status(first))["status"] == "ok"
            stale = await first.get(comments)
            assert stale.status_code == 200
            assert stale.json()["comments"] == []

            # The writer's next requests, on this instance and on another one, show all three.
            for http in (first, second):
                article = await http.get(f"/api/articles/{mine['slug']}", headers=token)
                assert article.status_code == 200, article.text
                listed = await http.get(f"/api/articles?author={writer['username']}", headers=token)
                assert [a["slug"] for a in listed.json()["articles"]] == [mine["slug"]]
                thread = await http.get(comments, headers=token)
                assert [c["body"] for c in thread.json()["comments"]] == ["mine"]
                feed = await http.get("/api/articles/feed", headers=token)
                assert [a["slug"] for a in feed.json()["articles"]] == [theirs["slug"]]
                assert feed.json()["articles"][0]["author"]["following"] is True

            # Once it is further behind than the limit, it is skipped: the primary answers.
            lagging = await wait_for_replica(first, "lagging")
            assert lagging["lag_seconds"] > 2
            fresh = await first.get(comments)
            assert [c["body"] for c in fresh.json()["comments"]] == ["mine"]
        finally:
            replica.resume_replay()
        replica.wait_streaming()
        await wait_for_replica(first, "ok")


async def test_a_stopped_replica_sends_reads_to_the_primary_without_errors(
    serve_replicated: ServeReplicated, postgres: PostgresServer, replica: PostgresReplica
) -> None:
    async with serve_replicated(BREAKER_RESET_SECONDS=60, BREAKER_FAILURE_THRESHOLD=2) as http:
        writer = await signup(http)
        article = await create_article(http, writer["token"], title="Outlives its replica")
        comments = f"/api/articles/{article['slug']}/comments"
        replica.wait_streaming()
        await wait_for_replica(http, "ok")
        for _ in range(3):  # the replica's pooled connections were just used
            assert (await http.get(comments)).status_code == 200

        replica.stop("immediate")
        try:
            on_primary = LogWatch(postgres)
            statuses = [(await http.get(comments)).status_code for _ in range(20)]
            assert statuses == [200] * 20
            assert on_primary.count(COMMENTS_READ) == 20

            down = await wait_for_replica(http, "down")
            assert down["error"]
            readiness = await http.get("/health/readiness")
            assert readiness.status_code == 200, readiness.text
            reported = readiness.json()["checks"]["replicas"]["replicas"]
            assert [r["status"] for r in reported] == ["down"]
            detailed = (await http.get("/health/detailed")).json()
            assert detailed["status"] == "degraded"
            assert detailed["checks"]["database"]["status"] == "ok"
            # The checks keep failing: the replica's breaker opens (threshold 2 here).
            deadline = time.monotonic() + 5
            while (await replica_status(http))["breaker"] != "open":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            breakers = (await http.get("/health/detailed")).json()["circuit_breakers"]
            assert (breakers["replica-0"], breakers["database"]) == ("open", "closed")
            exposition = (await http.get("/health/metrics")).text
            assert 'db_replica_usable{replica="replica-0"} 0.0' in exposition
            assert 'db_replica_lag_seconds{replica="replica-0"} +Inf' in exposition
            statuses = [(await http.get(comments)).status_code for _ in range(5)]
            assert statuses == [200] * 5
        finally:
            replica.start()
        replica.wait_streaming()


async def test_health_reports_each_replica_and_its_lag(
    serve_replicated: ServeReplicated, replica: PostgresReplica
) -> None:
    async with serve_replicated() as http:
        replica.wait_streaming()
        current = await wait_for_replica(http, "ok")
        assert current["name"] == "replica-0"
        assert current["address"].startswith(f"127.0.0.1:{replica.port}/")
        assert current["lag_seconds"] is not None
        assert current["lag_seconds"] <= 5
        assert current["breaker"] == "closed"
        readiness = await http.get("/health/readiness")
        assert readiness.status_code == 200
        assert readiness.json()["checks"]["replicas"]["replicas"][0]["status"] == "ok"
        exposition = (await http.get("/health/metrics")).text
        assert 'db_replica_usable{replica="replica-0"} 1.0' in exposition
        assert 'db_replica_lag_seconds{replica="replica-0"}' in exposition


async def test_a_stale_body_cached_from_the_replica_is_dropped_after_the_window(
    serve_replicated: ServeReplicated, postgres: PostgresServer, replica: PostgresReplica
) -> None:
    """An anonymous read served by a replica that has not replayed a write yet caches the old
    body after the write's invalidation; the second invalidation, one window later, drops it."""
    async with serve_replicated(DATABASE_REPLICA_MAX_LAG_SECONDS=2) as http:
        author, fan = await signup(http), await signup(http)
        article = await create_article(http, author["token"], title="Soon a favourite")
        path = f"/api/articles/{article['slug']}"
        replica.wait_streaming()
        await wait_for_replica(http, "ok")

        commit_marker(postgres)
        replica.wait_streaming()
        replica.pause_replay()
        try:
            liked = await http.post(f"{path}/favorite", headers=auth(fan["token"]))
            assert liked.json()["article"]["favoritesCount"] == 1
            stale = await http.get(path)  # the replica, still within the limit
            assert stale.json()["article"]["favoritesCount"] == 0
            assert (await http.get(path)).json()["article"]["favoritesCount"] == 0  # cached

            await asyncio.sleep(2 + 0.2 + 1 + 0.3)  # max lag + check interval + margin
            fresh = await http.get(path)
            assert fresh.json()["article"]["favoritesCount"] == 1
        finally:
            replica.resume_replay()
        replica.wait_streaming()


async def exists_calls(redis_url: str) -> int:
    client = Redis.from_url(redis_url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return int(stats.get("cmdstat_exists", {}).get("calls", 0))


async def test_signed_in_reads_learn_of_recent_writes_with_the_rate_limit_count(
    serve_replicated: ServeReplicated,
    postgres: PostgresServer,
    replica: PostgresReplica,
    base_env: dict[str, str],
) -> None:
    """With the rate limiter on, the reader's read-your-writes key comes back with the count:
    no EXISTS of its own (counted by Redis itself), and the routing is the same."""
    raised = "100000/minute"
    async with serve_replicated(
        RATE_LIMIT_ENABLED=True, RATE_LIMIT_DEFAULT=raised, RATE_LIMIT_WRITE=raised
    ) as http:
        writer, reader = await signup(http), await signup(http)
        article = await create_article(http, writer["token"], title="Counted with the limit")
        comments = f"/api/articles/{article['slug']}/comments"
        replica.wait_streaming()
        await wait_for_replica(http, "ok")

        before = await exists_calls(base_env["REDIS_URL"])
        on_primary, on_replica = LogWatch(postgres), LogWatch(replica)
        for _ in range(3):
            assert (await http.get(comments, headers=auth(reader["token"]))).status_code == 200
            assert (await http.get(comments, headers=auth(writer["token"]))).status_code == 200
        assert (on_replica.count(COMMENTS_READ), on_primary.count(COMMENTS_READ)) == (3, 3)
        assert await exists_calls(base_env["REDIS_URL"]) == before


async def test_a_read_failing_on_the_replica_with_the_primary_down_answers_503(
    settings_factory: Any,
    dedicated_postgres: PostgresServer,
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The one case with no server left: the replica breaks mid-request, the read moves to the
    primary, which is down too. The answer is the 503 envelope, not a 500."""
    dedicated_postgres.query(f"ALTER DATABASE {OUTAGE_DATABASE} SET log_statement = 'all'")
    port = free_port()
    standby = PostgresReplica(workdir / f"pg-replica-{port}" / "data", port, dedicated_postgres)
    standby.start()
    try:
        standby.wait_streaming()
        settings = settings_factory(
            DATABASE_URL=dedicated_postgres.url(OUTAGE_DATABASE),
            DATABASE_REPLICA_URLS=standby.url(OUTAGE_DATABASE),
            # No check between the stop and the read: the request finds the replica dead.
            DATABASE_REPLICA_CHECK_SECONDS=10,
        )
        async with serve(settings) as http:
            writer = await signup(http)
            article = await create_article(http, writer["token"], title="Nowhere to read")
            comments = f"/api/articles/{article['slug']}/comments"
            standby.wait_streaming()
            await http.app.state.resources.replicas.refresh()  # type: ignore[attr-defined]
            assert (await replica_status(http))["status"] == "ok"
            on_replica = LogWatch(standby)
            for _ in range(3):  # the replica's pooled connection was just used: no ping
                assert (await http.get(comments)).status_code == 200
            assert on_replica.count(COMMENTS_READ) == 3

            standby.stop("immediate")
            dedicated_postgres.stop("immediate")
            capsys.readouterr()
            response = await http.get(comments)
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "database_unavailable"
            assert int(response.headers["retry-after"]) > 0
            assert "replica_read_failed" in capsys.readouterr().out
    finally:
        standby.stop("immediate")
