"""No internals in any response: each dependency stopped for real (Redis, the S3 store, then
Postgres, servers of the test's own), and every response of the public health probes, a sample
of the API and its error paths (404, 405, 422, 500) scanned for exception class names, driver
and library names, tracebacks, SQL, file paths and the stopped servers' addresses. The detail
is still there for operators: in the log line and in the protected /health/detailed."""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from fastapi import APIRouter
from httpx import AsyncClient, Response
from PIL import Image
from sqlalchemy import text
from structlog.testing import capture_logs

from app.api.deps import SessionDep
from app.core.config import Settings
from devstack.s3 import ACCESS_KEY_ID, SECRET_ACCESS_KEY, MotoS3Server
from devstack.servers import PostgresServer, RedisServer, free_port
from tests.integration.conftest import OUTAGE_DATABASE
from tests.support.apps import serve

pytestmark = pytest.mark.slow

METRICS_TOKEN = "metrics-token-for-the-internals-test"
INTERNALS = {
    "exception class": re.compile(r"[A-Z][a-zA-Z]+(Error|Exception)"),
    "library": re.compile(r"asyncpg|sqlalchemy|redis\.exceptions|botocore|aiobotocore|psycopg"),
    "traceback": re.compile(r"Traceback|File \""),
    "SQL": re.compile(r"SELECT |INSERT |FROM "),
    "file path": re.compile(r"\.py\b|/(?:tmp|home|root|usr|var|srv|opt|work|etc)/"),
    "loopback host": re.compile(r"127\.0\.0\.1|localhost"),
}


def crashing_router() -> APIRouter:
    """Test-only routes whose failures carry every kind of internal in their text."""
    router = APIRouter(prefix="/_probe")

    @router.get("/boom", response_model=None)
    async def boom() -> NoReturn:
        raise RuntimeError('SELECT password FROM vault at db.internal:5432, File "/srv/app.py"')

    @router.get("/broken-sql", response_model=None)
    async def broken_sql(session: SessionDep) -> NoReturn:
        await session.execute(text("SELECT secret_column FROM no_such_table"))
        raise AssertionError("unreachable")

    return router


@pytest.fixture
def own_redis(workdir: Path) -> Iterator[RedisServer]:
    port = free_port()
    server = RedisServer(port, workdir / f"redis-internals-{port}")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_s3() -> Iterator[MotoS3Server]:
    server = MotoS3Server().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def http(
    settings_factory: Callable[..., Settings],
    dedicated_postgres: PostgresServer,
    own_redis: RedisServer,
    own_s3: MotoS3Server,
    tmp_path: Path,
) -> AsyncIterator[AsyncClient]:
    bucket = f"internals-{uuid.uuid4().hex[:12]}"
    own_s3.create_bucket(bucket)
    settings = settings_factory(
        DATABASE_URL=dedicated_postgres.url(OUTAGE_DATABASE),
        REDIS_URL=own_redis.url,
        UPLOAD_STORAGE="s3",
        UPLOAD_DIR=str(tmp_path),
        S3_ENDPOINT_URL=own_s3.url,
        S3_BUCKET=bucket,
        S3_ACCESS_KEY_ID=ACCESS_KEY_ID,
        S3_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY,
        S3_PUBLIC_BASE_URL="https://media.example.com",
        S3_TIMEOUT_SECONDS=1,
        METRICS_TOKEN=METRICS_TOKEN,
        RATE_LIMIT_ENABLED=True,
        RATE_LIMIT_DEFAULT="100000/minute",
        RATE_LIMIT_WRITE="100000/minute",
        RATE_LIMIT_LOGIN="100000/minute",
        RATE_LIMIT_REGISTER="100000/minute",
        DB_CONNECT_TIMEOUT=1,
        DB_POOL_TIMEOUT=1,
        BREAKER_RESET_SECONDS=1,
    )
    async with serve(settings, crashing_router()) as client:
        yield client


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


class Sampler:
    """Sends the sample of requests and keeps every response, labelled by phase."""

    def __init__(self, http: AsyncClient, token: str, name: str, slug: str) -> None:
        self.http = http
        self.auth = {"Authorization": f"Token {token}"}
        self.name = name
        self.slug = slug
        self.seen: list[tuple[str, str, Response]] = []

    async def sample(self, phase: str) -> dict[str, Response]:
        http, auth = self.http, self.auth
        article = {"title": f"On {phase}", "description": "d", "body": "b", "tagList": ["x"]}
        login = {"user": {"email": f"{self.name}@example.com", "password": "wrong-password"}}
        requests: dict[str, Any] = {
            "health": http.get("/health"),
            "liveness": http.get("/health/liveness"),
            "readiness": http.get("/health/readiness"),
            "detailed without token": http.get("/health/detailed"),
            "metrics without token": http.get("/health/metrics"),
            "articles": http.get("/api/articles"),
            "article": http.get(f"/api/articles/{self.slug}"),
            "new article": http.post("/api/articles", json={"article": article}, headers=auth),
            "login": http.post("/api/users/login", json=login),
            "user": http.get("/api/user", headers=auth),
            "tags": http.get("/api/tags"),
            "profile": http.get(f"/api/profiles/{self.name}"),
            "upload": http.post(
                "/api/uploads", files={"file": ("a.png", png(), "image/png")}, headers=auth
            ),
            "404": http.get("/api/no-such-route"),
            "405": http.delete("/api/tags"),
            "422": http.post(
                "/api/users", content=b'{"user": ', headers={"Content-Type": "application/json"}
            ),
            "422 fields": http.get("/api/articles?limit=banana"),
            "500": http.get("/_probe/boom"),
            "500 sql": http.get("/_probe/broken-sql"),
        }
        answers = {label: await request for label, request in requests.items()}
        self.seen += [(phase, label, response) for label, response in answers.items()]
        return answers


def leaks(response: Response, addresses: list[str]) -> list[str]:
    shown = response.text + "\n" + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    found = [kind for kind, pattern in INTERNALS.items() if pattern.search(shown)]
    return found + [f"address {where}" for where in addresses if where in shown]


async def test_no_response_names_an_internal_whatever_is_down(
    http: AsyncClient,
    dedicated_postgres: PostgresServer,
    own_redis: RedisServer,
    own_s3: MotoS3Server,
) -> None:
    name = f"intern{uuid.uuid4().hex[:6]}"
    user = {"username": name, "email": f"{name}@example.com", "password": "x" * 12}
    registered = await http.post("/api/users", json={"user": user})
    assert registered.status_code == 201, registered.text
    token = registered.json()["user"]["token"]
    article = {"title": "Internals", "description": "d", "body": "b"}
    created = await http.post(
        "/api/articles", json={"article": article}, headers={"Authorization": f"Token {token}"}
    )
    assert created.status_code == 201, created.text
    sampler = Sampler(http, token, name, created.json()["article"]["slug"])
    addresses = [
        f":{dedicated_postgres.port}",
        f":{own_redis.port}",
        f":{own_s3.port}",
        own_s3.url,
    ]

    up = await sampler.sample("all up")
    assert up["readiness"].status_code == 200
    assert up["upload"].status_code == 201, up["upload"].text
    assert up["500"].status_code == 500

    own_redis.stop()
    redis_down = await sampler.sample("redis down")
    assert redis_down["readiness"].json()["checks"]["redis"]["status"] == "down"

    own_s3.stop()
    store_down = await sampler.sample("redis and store down")
    assert store_down["upload"].status_code == 503

    dedicated_postgres.stop("immediate")
    with capture_logs() as logs:
        all_down = await sampler.sample("postgres, redis and store down")
    readiness = all_down["readiness"]
    assert readiness.status_code == 503
    assert readiness.json()["errors"]["body"] == ["database is unavailable"]
    assert readiness.json()["checks"]["database"] == {"status": "down", "latency_ms": None}
    assert all_down["articles"].status_code == 503

    found = [
        (phase, label, response.status_code, kinds, response.text[:300])
        for phase, label, response in sampler.seen
        if (kinds := leaks(response, addresses))
    ]
    assert found == []
    assert len(sampler.seen) == 4 * 19

    # The detail moved, it was not lost: the log line and the operators' page have it.
    failed = [line for line in logs if line["event"] == "readiness_check_failed"]
    assert failed
    assert failed[0]["check"] == "database"
    assert failed[0]["error"]
    operators = await http.get(
        "/health/detailed", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    checks = operators.json()["checks"]
    assert checks["database"]["error"]  # the exception's class, for operators
    assert checks["redis"]["status"] == "down"
    assert str(own_redis.port) in operators.text
    assert checks["storage"]["status"] == "down"
    assert checks["storage"]["error"]
