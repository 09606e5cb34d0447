"""Credential stuffing, caused for real through HTTP: failed logins from many client addresses
(each a different X-Forwarded-For from the trusted proxy) against one account, with Redis and
with Redis down (the in-process fallback)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from argon2 import PasswordHasher
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from structlog.testing import capture_logs

from app.core.config import Settings
from app.core.hashing_queue import HASHING_MAX_WAITING, hashes_pending
from app.core.security import HASHING_CONCURRENCY, needs_rehash, verify_password
from app.main import create_app
from app.repositories import users as users_repo
from devstack.servers import free_port
from tests.support.apps import serve
from tests.support.databases import rolled_back_sessions

PROXY = "10.0.0.1"
ACCOUNT_LIMIT = 3
LIMITS = {
    "RATE_LIMIT_ENABLED": True,
    "RATE_LIMIT_DEFAULT": "1000/minute",
    "RATE_LIMIT_WRITE": "1000/minute",
    "RATE_LIMIT_LOGIN": "1000/minute",  # per address: never what refuses here
    "RATE_LIMIT_REGISTER": "1000/minute",
    "RATE_LIMIT_LOGIN_ACCOUNT": f"{ACCOUNT_LIMIT}/hour",
    "TRUSTED_PROXIES": PROXY,
}
PASSWORD = "correct-horse-battery"
Serve = Callable[..., Any]


@pytest.fixture(params=["redis", "redis-down"])
async def throttled(
    request: pytest.FixtureRequest, settings_factory: Callable[..., Settings]
) -> AsyncIterator[FastAPI]:
    """The app with an account limit of 3, behind a trusted proxy; its writes rolled back.
    "redis-down": nothing listens at REDIS_URL, so the limiter counts in process."""
    overrides: dict[str, object] = dict(LIMITS)
    if request.param == "redis-down":
        overrides["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    application = create_app(settings_factory(**overrides))
    async with LifespanManager(application, startup_timeout=60):
        resources = application.state.resources
        if request.param == "redis":
            await resources.redis.client.flushdb()
        async with rolled_back_sessions(resources):
            yield application


def via_proxy(app: FastAPI) -> AsyncClient:
    transport = ASGITransport(app=app, client=(PROXY, 40000), raise_app_exceptions=False)
    return AsyncClient(transport=transport, base_url="http://testserver")


class Clients:
    """Each call comes from a new client address, as a botnet's would."""

    def __init__(self, http: AsyncClient) -> None:
        self.http = http
        self.count = 0

    async def login(self, email: str, password: str) -> Response:
        self.count += 1
        address = f"192.0.2.{self.count}" if self.count < 255 else f"198.51.100.{self.count % 255}"
        return await self.http.post(
            "/api/users/login",
            json={"user": {"email": email, "password": password}},
            headers={"X-Forwarded-For": address},
        )


async def register(http: AsyncClient, name: str) -> str:
    email = f"{name}@example.com"
    user = {"username": name, "email": email, "password": PASSWORD}
    response = await http.post("/api/users", json={"user": user})
    assert response.status_code == 201, response.text
    return email


def assert_account_limited(response: Response) -> None:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["code"] == "rate_limited"
    assert body["request_id"] == response.headers["x-request-id"]
    assert 1 <= int(response.headers["retry-after"]) <= 2 * 3600
    # The account's limit, not the address's (whose headers would say 1000 and plenty left).
    assert response.headers.get_list("ratelimit-limit") == [str(ACCOUNT_LIMIT)]
    assert response.headers.get_list("ratelimit-remaining") == ["0"]


async def test_failures_from_many_addresses_lock_that_account_only(
    throttled: FastAPI, request: pytest.FixtureRequest
) -> None:
    async with via_proxy(throttled) as http:
        clients = Clients(http)
        alice = await register(http, "alice")
        bob = await register(http, "bob")
        for _ in range(ACCOUNT_LIMIT):
            wrong = await clients.login(alice, "not-the-password")
            assert wrong.status_code == 401, wrong.text

        assert_account_limited(await clients.login(alice, "yet-another-guess"))
        # The right password is refused too: a 200 among the 429s would give it away.
        assert_account_limited(await clients.login(alice, PASSWORD))
        # The same account however the email is typed.
        assert_account_limited(await clients.login("  ALICE@Example.com ", PASSWORD))
        # Another account still logs in, from an address that took part in the attack.
        clients.count = 0
        assert (await clients.login(bob, PASSWORD)).status_code == 200
    counted_in = {"redis": "redis", "redis-down": "memory"}[
        request.node.callspec.params["throttled"]
    ]
    assert throttled.state.resources.rate_limiter.backend == counted_in


async def test_a_successful_login_is_not_counted(throttled: FastAPI) -> None:
    async with via_proxy(throttled) as http:
        clients = Clients(http)
        carol = await register(http, "carol")
        for _ in range(ACCOUNT_LIMIT + 2):
            assert (await clients.login(carol, PASSWORD)).status_code == 200
        for _ in range(ACCOUNT_LIMIT - 1):
            assert (await clients.login(carol, "wrong-password")).status_code == 401
        assert (await clients.login(carol, PASSWORD)).status_code == 200


def shape(response: Response) -> tuple[int, dict[str, Any], list[str]]:
    """Status, body without its request id, and header names (values carry ids and times)."""
    body = response.json()
    body.pop("request_id")
    return response.status_code, body, sorted(response.headers.keys())


async def test_an_unknown_email_gets_exactly_the_same_answers(throttled: FastAPI) -> None:
    async with via_proxy(throttled) as http:
        clients = Clients(http)
        known = await register(http, "dave")
        unknown = "nobody-here@example.com"
        answers = {
            email: [shape(await clients.login(email, "guess")) for _ in range(ACCOUNT_LIMIT + 2)]
            for email in (known, unknown)
        }
        assert answers[known] == answers[unknown]
        assert [status for status, _, _ in answers[known]] == [401] * ACCOUNT_LIMIT + [429] * 2


async def test_a_locked_account_costs_no_lookup_and_no_hashing(
    throttled: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    lookup = users_repo.get_by_email

    async def counting_verify(password_hash: str | None, password: str) -> bool:
        calls.append("verify")
        return await verify_password(password_hash, password)

    async def counting_lookup(session: AsyncSession, email: str) -> Any:
        calls.append("lookup")
        return await lookup(session, email)

    monkeypatch.setattr("app.services.users.verify_password", counting_verify)
    monkeypatch.setattr(users_repo, "get_by_email", counting_lookup)
    async with via_proxy(throttled) as http:
        clients = Clients(http)
        erin = await register(http, "erin")
        for _ in range(ACCOUNT_LIMIT):
            await clients.login(erin, "wrong-password")
        assert calls == ["lookup", "verify"] * ACCOUNT_LIMIT
        calls.clear()
        # One after another: the requests share the test's one connection.
        flood = [await clients.login(erin, "guess") for _ in range(20)]
        assert {response.status_code for response in flood} == {429}
        assert calls == []


async def test_keys_logs_and_metrics_never_hold_the_email(throttled: FastAPI) -> None:
    resources = throttled.state.resources
    email = "frank@example.com"
    digest = hashlib.sha256(email.encode()).hexdigest()
    async with via_proxy(throttled) as http:
        clients = Clients(http)
        with capture_logs() as logs:
            for _ in range(ACCOUNT_LIMIT + 1):
                await clients.login(" Frank@example.com", "a-guessed-password")
        [limited] = [line for line in logs if line["event"] == "login_account_limited"]
        assert limited["log_level"] == "warning"
        assert limited["account"] == f"account:{digest}"
        assert "frank" not in repr(logs).lower()
        assert "a-guessed-password" not in repr(logs)
        if resources.redis.enabled and resources.rate_limiter.backend == "redis":
            keys = [key.decode() for key in await resources.redis.client.keys("*")]
            account_keys = [key for key in keys if "login_account" in key]
            assert account_keys
            assert all(digest in key for key in account_keys)
            assert not any("frank" in key.lower() for key in keys)
        exposition = (await http.get("/health/metrics")).text
    assert 'rate_limit_decisions_total{outcome="limited",rule="login_account"} 1.0' in exposition
    assert (
        f'rate_limit_decisions_total{{outcome="allowed",rule="login_account"}} '
        f"{float(ACCOUNT_LIMIT)}" in exposition
    )


async def test_a_login_flood_past_the_hashing_queue_is_refused_at_once(
    settings_factory: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Distinct unknown emails (no account limit helps) from one process's worth of clients:
    past the hashes running and HASHING_MAX_WAITING waiting, a login gets 503 service_busy,
    and once the queue is full a login arriving gets it before its user lookup."""
    settings = settings_factory(RATE_LIMIT_ENABLED=False, DB_MAX_OVERFLOW=50)
    looked_up: list[str] = []
    lookup = users_repo.get_by_email

    async def counting_lookup(session: AsyncSession, email: str) -> Any:
        looked_up.append(email)
        return await lookup(session, email)

    monkeypatch.setattr(users_repo, "get_by_email", counting_lookup)
    full = HASHING_CONCURRENCY + HASHING_MAX_WAITING
    async with serve(settings) as http:

        async def login(email: str) -> Response:
            body = {"user": {"email": email, "password": "guess"}}
            return await http.post("/api/users/login", json=body)

        first = [asyncio.create_task(login(f"flood{n}@example.com")) for n in range(60)]
        while hashes_pending() < full:  # noqa: ASYNC110 (a counter; nothing signals it)
            await asyncio.sleep(0.001)
        # A hash takes tens of milliseconds: the queue is still full while these arrive.
        late = await asyncio.gather(*(login(f"late{n}@example.com") for n in range(10)))
        responses = [*await asyncio.gather(*first), *late]
    statuses = [response.status_code for response in responses]
    assert set(statuses) == {401, 503}, statuses
    assert statuses.count(401) >= full
    for busy in (response for response in responses if response.status_code == 503):
        assert busy.json()["code"] == "service_busy"
        assert busy.headers["retry-after"] == "1"
    assert [response.status_code for response in late] == [503] * 10
    assert not [email for email in looked_up if email.startswith("late")]
    assert hashes_pending() == 0


async def test_a_login_upgrades_an_old_hash_in_a_session_of_its_own(
    client: AsyncClient, db_connection: AsyncConnection
) -> None:
    """The rehash path: the lookup's session is closed before the password is checked, so the
    upgraded hash is saved in a second one."""
    email = await register(client, "grace")
    old = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(PASSWORD)
    update = text("UPDATE users SET password_hash = :hash WHERE email = :email")
    await db_connection.execute(update, {"hash": old, "email": email})
    response = await client.post(
        "/api/users/login", json={"user": {"email": email, "password": PASSWORD}}
    )
    assert response.status_code == 200, response.text
    select = text("SELECT password_hash FROM users WHERE email = :email")
    stored = (await db_connection.execute(select, {"email": email})).scalar_one()
    assert stored != old
    assert not needs_rehash(stored)
    again = {"user": {"email": email, "password": PASSWORD}}
    assert (await client.post("/api/users/login", json=again)).status_code == 200
