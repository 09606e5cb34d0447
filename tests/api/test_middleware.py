"""CORS from settings, security headers on every response, forwarded headers trusted only
from TRUSTED_PROXIES."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import structlog
from httpx import AsyncClient
from structlog.testing import capture_logs

from app.core.config import Settings
from tests.support.apps import serve

SettingsFactory = Callable[..., Settings]
ORIGIN = "https://app.example.com"


async def test_cors_preflight_for_a_listed_origin(settings_factory: SettingsFactory) -> None:
    async with serve(settings_factory(CORS_ORIGINS=f"{ORIGIN},http://localhost:3000")) as http:
        response = await http.options(
            "/api/articles",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == ORIGIN
        allowed = response.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed
        assert "content-type" in allowed
        assert "POST" in response.headers["access-control-allow-methods"]

        simple = await http.get("/api/tags", headers={"Origin": ORIGIN})
        assert simple.headers["access-control-allow-origin"] == ORIGIN
        assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()


async def test_cors_refuses_other_origins(settings_factory: SettingsFactory) -> None:
    async with serve(settings_factory(CORS_ORIGINS=ORIGIN)) as http:
        response = await http.options(
            "/api/articles",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert response.status_code == 400
        assert "access-control-allow-origin" not in response.headers
        simple = await http.get("/api/tags", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in simple.headers


async def test_security_headers_on_every_response(client: AsyncClient) -> None:
    for response in (
        await client.get("/health"),
        await client.get("/api/tags"),
        await client.get("/no/such/route"),
        await client.post("/api/users/login", content=b"{"),
    ):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"]
        assert "strict-transport-security" not in response.headers  # not in APP_ENV=test


async def test_hsts_in_production(settings_factory: SettingsFactory) -> None:
    settings = settings_factory(APP_ENV="production", SECRET_KEY=secrets.token_hex(32))
    async with serve(settings) as http:
        response = await http.get("/health")
        assert "max-age=" in response.headers["strict-transport-security"]


async def _client_ip(http: AsyncClient, forwarded_for: str) -> str:
    with capture_logs() as logs:
        await http.get("/api/tags", headers={"X-Forwarded-For": forwarded_for})
    [line] = [e for e in logs if e["event"] == "request_completed"]
    return str(line["client_ip"])


async def test_forwarded_for_ignored_from_untrusted_peers(client: AsyncClient) -> None:
    # The ASGI transport's peer is 127.0.0.1, and the test settings trust no proxy.
    assert await _client_ip(client, "203.0.113.7") == "127.0.0.1"


async def test_forwarded_for_from_a_trusted_proxy(settings_factory: SettingsFactory) -> None:
    async with serve(settings_factory(TRUSTED_PROXIES="127.0.0.0/8,10.0.0.0/8")) as http:
        assert await _client_ip(http, "203.0.113.7") == "203.0.113.7"
        # A client-supplied hop before the proxies' own cannot choose the address.
        assert await _client_ip(http, "198.51.100.1, 203.0.113.7, 10.1.2.3") == "203.0.113.7"
        assert await _client_ip(http, "not-an-ip") == "127.0.0.1"


async def test_request_id_is_bound_for_the_request_only(client: AsyncClient) -> None:
    """The in-process transport runs the app in this task's context: the request's log
    binding must be gone afterwards, and what the caller had bound must be back."""
    structlog.contextvars.bind_contextvars(request_id="callers-own", suite="api")
    try:
        response = await client.get("/api/tags", headers={"X-Request-ID": "req-ctx-1"})
        assert response.headers["x-request-id"] == "req-ctx-1"
        assert structlog.contextvars.get_contextvars() == {
            "request_id": "callers-own",
            "suite": "api",
        }
    finally:
        structlog.contextvars.clear_contextvars()
    await client.get("/api/tags")
    assert structlog.contextvars.get_contextvars() == {}
