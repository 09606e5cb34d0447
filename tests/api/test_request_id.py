"""X-Request-ID: a well-formed incoming id is kept, anything else replaced; errors quote it."""

from __future__ import annotations

import re
import uuid

import pytest
from httpx import AsyncClient

GENERATED = re.compile(r"^[0-9a-f]{32}$")

WELL_FORMED = [
    pytest.param(str(uuid.uuid4()), id="uuid"),
    pytest.param(uuid.uuid4().hex, id="nginx-32-hex"),
    pytest.param("a", id="one-char"),
    pytest.param("A.b_c-9" * 18 + "xy", id="128-chars"),
]
MALFORMED = [
    pytest.param("A" * 129, id="129-chars"),
    pytest.param("has space", id="space"),
    pytest.param("ünïcödé", id="unicode"),
    pytest.param("", id="empty"),
    pytest.param("a/b", id="slash"),
    pytest.param("id\tx", id="tab"),
    pytest.param("<script>", id="markup"),
]


@pytest.mark.parametrize("incoming", WELL_FORMED)
async def test_well_formed_id_is_kept(client: AsyncClient, incoming: str) -> None:
    assert 1 <= len(incoming) <= 128
    response = await client.get("/health", headers={"X-Request-ID": incoming})
    assert response.headers["x-request-id"] == incoming


@pytest.mark.parametrize("incoming", MALFORMED)
async def test_malformed_id_is_replaced(client: AsyncClient, incoming: str) -> None:
    response = await client.get("/health", headers={b"X-Request-ID": incoming.encode()})
    assert response.headers["x-request-id"] != incoming
    assert GENERATED.match(response.headers["x-request-id"])


async def test_fresh_id_without_header(client: AsyncClient) -> None:
    first = await client.get("/health")
    second = await client.get("/health")
    assert GENERATED.match(first.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_one_id_header_on_the_response(client: AsyncClient) -> None:
    response = await client.get("/health", headers={"X-Request-ID": "abc"})
    assert response.headers.get_list("x-request-id") == ["abc"]


@pytest.mark.parametrize("incoming", ["trace-42.a_b", "A" * 129])
async def test_error_body_carries_the_id(client: AsyncClient, incoming: str) -> None:
    response = await client.get("/no/such/route", headers={"X-Request-ID": incoming})
    assert response.status_code == 404
    assert response.json()["request_id"] == response.headers["x-request-id"]
    if len(incoming) <= 128:
        assert response.json()["request_id"] == incoming


async def test_validation_error_carries_the_id(client: AsyncClient) -> None:
    response = await client.post(
        "/api/users/login", content=b"{", headers={"X-Request-ID": "req-422", **JSON}
    )
    assert response.status_code == 422
    assert response.json()["request_id"] == "req-422"


JSON = {"content-type": "application/json"}
