"""Every error response has the one envelope, framework errors and hostile input included."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn

import httpx
import pytest
from fastapi import APIRouter
from httpx import AsyncClient
from pydantic import BaseModel
from sqlalchemy import text
from structlog.testing import capture_logs

from app.api.deps import SessionDep
from app.core.config import Settings
from tests.support.apps import serve

JSON = {"content-type": "application/json"}


class Payload(BaseModel):
    name: str
    count: int = 0


def probe_router() -> APIRouter:
    """Test-only routes that pass unbounded input straight to Postgres, and one that crashes."""
    router = APIRouter(prefix="/_probe")

    @router.post("/store")
    async def store(payload: Payload, session: SessionDep) -> dict[str, Any]:
        row = (
            await session.execute(
                text("SELECT CAST(:name AS text) AS name, CAST(:count AS bigint) AS count"),
                {"name": payload.name, "count": payload.count},
            )
        ).one()
        return {"name": row.name, "count": row.count}

    @router.get("/numbers/{number}")
    async def number(number: int, session: SessionDep, q: str = "") -> dict[str, Any]:
        row = (
            await session.execute(
                text("SELECT CAST(:n AS bigint) AS n, CAST(:q AS text) AS q"),
                {"n": number, "q": q},
            )
        ).one()
        return {"number": row.n, "q": row.q}

    @router.get("/broken-sql", response_model=None)
    async def broken_sql(session: SessionDep) -> NoReturn:
        await session.execute(text("SELECT secret_column FROM no_such_table"))
        raise AssertionError("unreachable")

    @router.get("/boom", response_model=None)
    async def boom() -> NoReturn:
        raise RuntimeError("exploded near SELECT password FROM vault")

    return router


@pytest.fixture(scope="module")
async def probe(settings_factory: Callable[..., Settings]) -> AsyncIterator[AsyncClient]:
    async with serve(settings_factory(), probe_router()) as http:
        yield http


@pytest.fixture(scope="module")
async def production(settings_factory: Callable[..., Settings]) -> AsyncIterator[AsyncClient]:
    settings = settings_factory(APP_ENV="production", SECRET_KEY=secrets.token_urlsafe(48))
    async with serve(settings, probe_router()) as http:
        yield http


@pytest.fixture(scope="module")
async def debug(settings_factory: Callable[..., Settings]) -> AsyncIterator[AsyncClient]:
    async with serve(settings_factory(APP_ENV="development", DEBUG=True), probe_router()) as http:
        yield http


def assert_envelope(response: httpx.Response, status: int, code: str | None = None) -> list[str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) >= {"errors", "code", "request_id"}, body
    messages = body["errors"]["body"]
    assert isinstance(messages, list)
    assert messages
    assert all(isinstance(m, str) and m for m in messages)
    assert isinstance(body["code"], str)
    assert body["code"] == body["code"].lower()
    assert " " not in body["code"]
    if code is not None:
        assert body["code"] == code, body
    assert body["request_id"] == response.headers["x-request-id"]
    assert response.headers["x-content-type-options"] == "nosniff"
    return list(messages)


# --- framework errors -------------------------------------------------------------------


async def test_unknown_route_404(client: AsyncClient) -> None:
    assert_envelope(await client.get("/no/such/route"), 404, "not_found")


async def test_method_not_allowed_405_with_allow(client: AsyncClient) -> None:
    response = await client.delete("/api/tags")
    assert_envelope(response, 405, "method_not_allowed")
    assert "GET" in response.headers["allow"]


async def test_malformed_json(client: AsyncClient) -> None:
    response = await client.post("/api/users/login", content=b'{"user": {', headers=JSON)
    messages = assert_envelope(response, 422, "validation_error")
    assert messages == ["body is not valid JSON"]


async def test_validation_422_names_the_field(client: AsyncClient) -> None:
    response = await client.post("/api/users/login", json={"user": {"email": "a@b.example"}})
    messages = assert_envelope(response, 422, "validation_error")
    assert any("password" in m for m in messages), messages


async def test_query_validation_422(client: AsyncClient) -> None:
    messages = assert_envelope(await client.get("/api/articles?limit=abc"), 422)
    assert any("limit" in m for m in messages)


# --- unhandled exceptions -----------------------------------------------------------------


async def test_500_in_production_is_generic(production: AsyncClient) -> None:
    with capture_logs() as logs:
        response = await production.get("/_probe/boom")
    messages = assert_envelope(response, 500, "internal_error")
    body = response.text
    for leak in ("RuntimeError", "exploded", "SELECT", "Traceback", "vault", ".py"):
        assert leak not in body
    assert response.json()["request_id"] in messages[0] or "request id" in messages[0]
    assert response.headers["x-frame-options"] == "DENY"
    assert "strict-transport-security" in response.headers
    logged = [e for e in logs if e["event"] == "unhandled_exception"]
    assert len(logged) == 1, "logged once, with its stack trace"
    assert logged[0]["log_level"] == "error"
    assert logged[0]["exc_info"] is True
    [completed] = [e for e in logs if e["event"] == "request_completed"]
    assert completed["status"] == 500
    assert completed["route"] == "/_probe/boom"
    assert completed["log_level"] == "error"


async def test_sql_error_is_a_generic_500(production: AsyncClient) -> None:
    with capture_logs() as logs:
        response = await production.get("/_probe/broken-sql")
    assert_envelope(response, 500, "internal_error")
    for leak in ("no_such_table", "secret_column", "SELECT", "ProgrammingError", "asyncpg"):
        assert leak not in response.text
    assert [e["event"] for e in logs if e.get("exc_info")] == ["unhandled_exception"]


async def test_500_in_debug_carries_the_exception_text(debug: AsyncClient) -> None:
    messages = assert_envelope(await debug.get("/_probe/boom"), 500, "internal_error")
    assert "exploded" in messages[0]


async def test_500_request_id_is_the_callers(production: AsyncClient) -> None:
    response = await production.get("/_probe/boom", headers={"X-Request-ID": "trace-500.a_b"})
    assert_envelope(response, 500)
    assert response.json()["request_id"] == "trace-500.a_b"


# --- hostile input ------------------------------------------------------------------------


async def test_int64_overflow_in_query_and_path(client: AsyncClient, probe: AsyncClient) -> None:
    huge = "99999999999999999999999"
    assert_envelope(await client.get(f"/api/articles?limit={huge}"), 422)
    assert_envelope(await client.get(f"/api/articles?offset={huge}"), 422)
    assert_envelope(await client.get(f"/api/articles?offset=-{huge}"), 422)
    # An unbounded int reaches Postgres: the driver's refusal is still the caller's 4xx.
    assert_envelope(await probe.get(f"/_probe/numbers/{huge}"), 422, "invalid_value")
    assert_envelope(await probe.get(f"/_probe/numbers/{2**63}"), 422, "invalid_value")
    ok = await probe.get(f"/_probe/numbers/{2**63 - 1}")
    assert ok.status_code == 200
    assert ok.json()["number"] == 2**63 - 1


async def test_int64_overflow_in_json(client: AsyncClient, probe: AsyncClient) -> None:
    body = b'{"name": "x", "count": 99999999999999999999999}'
    assert_envelope(await probe.post("/_probe/store", content=body, headers=JSON), 422)
    response = await client.post(
        "/api/users/login",
        content=b'{"user": {"email": 99999999999999999999999, "password": 1e999}}',
        headers=JSON,
    )
    assert_envelope(response, 422)


async def test_nul_bytes(client: AsyncClient, probe: AsyncClient) -> None:
    assert_envelope(await client.get("/api/articles?tag=a%00b"), 422)
    assert_envelope(await client.get("/api/profiles/a%00b"), 422)
    response = await client.post(
        "/api/users",
        content=b'{"user": {"username": "nul\\u0000user", "email": "n@x.example", '
        b'"password": "pass\\u0000word-long-enough"}}',
        headers=JSON,
    )
    assert_envelope(response, 422)
    assert_envelope(await probe.get("/_probe/numbers/1?q=a%00b"), 422, "invalid_value")
    body = b'{"name": "a\\u0000b"}'
    assert_envelope(await probe.post("/_probe/store", content=body, headers=JSON), 422)


async def test_lone_surrogates(client: AsyncClient, probe: AsyncClient) -> None:
    response = await client.post(
        "/api/users/login",
        content=b'{"user": {"email": "a@b.example", "password": "\\ud800"}}',
        headers=JSON,
    )
    assert response.status_code < 500
    assert_envelope(response, response.status_code)
    response = await client.post(
        "/api/users",
        content=b'{"user": {"username": "\\udfff", "email": "s@x.example", '
        b'"password": "long-enough-password"}}',
        headers=JSON,
    )
    assert_envelope(response, 422)
    body = b'{"name": "\\ud800"}'
    assert_envelope(await probe.post("/_probe/store", content=body, headers=JSON), 422)


async def test_invalid_utf8_body(client: AsyncClient, probe: AsyncClient) -> None:
    body = b'{"user": {"email": "\xff\xfe@x.example", "password": "\xc3\x28"}}'
    response = await client.post("/api/users/login", content=body, headers=JSON)
    assert 400 <= response.status_code < 500
    assert_envelope(response, response.status_code)
    response = await probe.post("/_probe/store", content=b'{"name": "\xed\xa0\x80"}', headers=JSON)
    assert 400 <= response.status_code < 500
    assert_envelope(response, response.status_code)


async def test_invalid_utf8_in_query_and_path(client: AsyncClient) -> None:
    response = await client.get("/api/articles?tag=%ff%fe")
    assert response.status_code < 500
    response = await client.get("/api/profiles/%ff%fe")
    assert response.status_code < 500
    assert_envelope(response, response.status_code)


async def test_wrong_content_type(client: AsyncClient) -> None:
    body = b'{"user": {"email": "a@b.example", "password": "whatever-password"}}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/xml"):
        response = await client.post(
            "/api/users/login", content=body, headers={"content-type": content_type}
        )
        assert 400 <= response.status_code < 500, (content_type, response.text)
        assert_envelope(response, response.status_code)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" * 100_000, id="unclosed"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="closed"),
        pytest.param(b'{"a":' * 50_000 + b"1" + b"}" * 50_000, id="objects"),
    ],
)
async def test_deeply_nested_json(client: AsyncClient, body: bytes) -> None:
    response = await client.post("/api/users/login", content=body, headers=JSON)
    assert 400 <= response.status_code < 500
    assert_envelope(response, response.status_code)


async def test_huge_header_value(client: AsyncClient) -> None:
    big = "a" * 65536
    response = await client.get("/api/tags", headers={"X-Padding": big})
    assert response.status_code == 200
    response = await client.get("/api/user", headers={"Authorization": "Token " + big})
    assert_envelope(response, 401)
    response = await client.get("/api/tags", headers={"X-Request-ID": big})
    assert response.headers["x-request-id"] != big
