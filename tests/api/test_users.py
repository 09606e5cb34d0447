"""Registration, login, current user and updates."""

from __future__ import annotations

import time

import jwt
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from tests.api.helpers import PASSWORD, auth, error_messages, register
from tests.conftest import TEST_SECRET


async def test_register_returns_user_with_token(client: AsyncClient) -> None:
    response = await client.post(
        "/api/users",
        json={"user": {"username": "jake", "email": "Jake@Jake.jake", "password": "jakejake"}},
    )
    assert response.status_code == 201
    user = response.json()["user"]
    assert user["username"] == "jake"
    assert user["email"] == "jake@jake.jake"
    assert user["bio"] is None
    assert user["image"] is None
    assert set(user) == {"email", "token", "username", "bio", "image"}
    claims = jwt.decode(user["token"], TEST_SECRET, algorithms=["HS256"])
    assert {"sub", "exp", "iat"} <= set(claims)


async def test_register_duplicate_email_and_username(client: AsyncClient) -> None:
    await register(client, "taken")
    response = await client.post(
        "/api/users",
        json={"user": {"username": "taken", "email": "taken@example.com", "password": PASSWORD}},
    )
    assert response.status_code == 422
    messages = error_messages(response)
    assert "email has already been taken" in messages
    assert "username has already been taken" in messages


async def test_register_email_is_case_insensitive(client: AsyncClient) -> None:
    await register(client, "casey")
    response = await client.post(
        "/api/users",
        json={"user": {"username": "other", "email": "CASEY@example.com", "password": PASSWORD}},
    )
    assert response.status_code == 422
    assert error_messages(response) == ["email has already been taken"]


async def test_register_validation_names_each_field(client: AsyncClient) -> None:
    response = await client.post("/api/users", json={"user": {"email": "not-an-email"}})
    assert response.status_code == 422
    messages = error_messages(response)
    assert "username can't be blank" in messages
    assert "password can't be blank" in messages
    assert any(m.startswith("email ") for m in messages)
    response = await client.post(
        "/api/users", json={"user": {"username": "  ", "email": "a@b.co", "password": "short"}}
    )
    messages = error_messages(response)
    assert any(m.startswith("username") for m in messages)
    assert any(m.startswith("password") for m in messages)


async def test_login_success_and_failures_look_alike(client: AsyncClient) -> None:
    await register(client, "lena")
    ok = await client.post(
        "/api/users/login", json={"user": {"email": "LENA@example.com", "password": PASSWORD}}
    )
    assert ok.status_code == 200
    assert ok.json()["user"]["username"] == "lena"

    timings = {}
    bodies = {}
    for case, email, password in (
        ("wrong_password", "lena@example.com", "not-the-password"),
        ("unknown_email", "nobody@example.com", PASSWORD),
    ):
        started = time.perf_counter()
        response = await client.post(
            "/api/users/login", json={"user": {"email": email, "password": password}}
        )
        timings[case] = time.perf_counter() - started
        assert response.status_code == 401
        bodies[case] = error_messages(response)
    assert bodies["wrong_password"] == bodies["unknown_email"]
    # Both paths run one Argon2 verification; neither is an order of magnitude faster.
    assert timings["unknown_email"] > timings["wrong_password"] / 5


async def test_current_user_requires_token(client: AsyncClient) -> None:
    response = await client.get("/api/user")
    assert response.status_code == 401
    assert response.json()["code"] == "missing_token"
    user = await register(client)
    for header in (f"Token {user['token']}", f"Bearer {user['token']}"):
        response = await client.get("/api/user", headers={"Authorization": header})
        assert response.status_code == 200
        assert response.json()["user"]["username"] == user["username"]


async def test_update_user_fields_persist(client: AsyncClient) -> None:
    user = await register(client, "mover")
    response = await client.put(
        "/api/user",
        json={"user": {"bio": "I move", "image": "https://img.example/a.png"}},
        headers=auth(user["token"]),
    )
    assert response.status_code == 200
    updated = response.json()["user"]
    assert updated["bio"] == "I move"
    assert updated["image"] == "https://img.example/a.png"
    again = (await client.get("/api/user", headers=auth(user["token"]))).json()["user"]
    assert again["bio"] == "I move"


async def test_rename_keeps_token_valid_and_updates_profile(client: AsyncClient) -> None:
    user = await register(client, "oldname")
    first_profile = await client.get("/api/profiles/oldname")  # now cached
    assert first_profile.status_code == 200
    response = await client.put(
        "/api/user",
        json={"user": {"username": "newname", "bio": "renamed"}},
        headers=auth(user["token"]),
    )
    assert response.status_code == 200
    # A new name is not a new credential: the token issued before it still works (a new
    # password or email revokes it: tests/api/test_token_revocation.py).
    me = await client.get("/api/user", headers=auth(user["token"]))
    assert me.json()["user"]["username"] == "newname"
    assert (await client.get("/api/profiles/oldname")).status_code == 404
    assert (await client.get("/api/profiles/newname")).status_code == 200


async def test_password_change_then_login(client: AsyncClient) -> None:
    user = await register(client, "pwchanger")
    response = await client.put(
        "/api/user",
        json={"user": {"password": "a-brand-new-password"}},
        headers=auth(user["token"]),
    )
    assert response.status_code == 200
    old = await client.post(
        "/api/users/login", json={"user": {"email": user["email"], "password": PASSWORD}}
    )
    assert old.status_code == 401
    new = await client.post(
        "/api/users/login",
        json={"user": {"email": user["email"], "password": "a-brand-new-password"}},
    )
    assert new.status_code == 200


async def test_update_user_needs_a_field(client: AsyncClient) -> None:
    user = await register(client)
    response = await client.put("/api/user", json={"user": {}}, headers=auth(user["token"]))
    assert response.status_code == 422
    assert error_messages(response)


async def test_update_to_taken_username_is_422(client: AsyncClient) -> None:
    await register(client, "first")
    second = await register(client, "second")
    response = await client.put(
        "/api/user", json={"user": {"username": "first"}}, headers=auth(second["token"])
    )
    assert response.status_code == 422
    assert error_messages(response) == ["username has already been taken"]


async def test_unknown_keys_are_ignored(client: AsyncClient) -> None:
    response = await client.post(
        "/api/users",
        json={
            "user": {
                "username": "extra",
                "email": "extra@example.com",
                "password": PASSWORD,
                "admin": True,
                "id": 1,
            },
            "other": {"x": 1},
        },
    )
    assert response.status_code == 201
    assert "admin" not in response.json()["user"]


async def test_login_upgrades_a_hash_made_with_old_parameters(
    client: AsyncClient, db_connection: AsyncConnection
) -> None:
    from argon2 import PasswordHasher

    await register(client, "legacy")
    old_hash = PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4).hash(PASSWORD)
    await db_connection.execute(
        text("UPDATE users SET password_hash = :h WHERE username = 'legacy'"), {"h": old_hash}
    )
    response = await client.post(
        "/api/users/login", json={"user": {"email": "legacy@example.com", "password": PASSWORD}}
    )
    assert response.status_code == 200
    stored = await db_connection.scalar(
        text("SELECT password_hash FROM users WHERE username = 'legacy'")
    )
    assert stored != old_hash
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    again = await client.post(
        "/api/users/login", json={"user": {"email": "legacy@example.com", "password": PASSWORD}}
    )
    assert again.status_code == 200
