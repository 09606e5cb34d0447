"""A stolen token dies with a password or email change, and signing keys rotate without logouts.

Each case plays the attack through HTTP: a token is kept (as a thief would keep it), the owner
changes credentials, and the kept token is tried on every kind of route: one that loads the
account (GET /user), signed-in reads and writes that need only the user id (the feed, a follow),
and an optional-auth read (the article list). The version check on the id-only routes is taken
on each of its paths: the rate limiter's round trip, Redis asked directly, and Postgres when
Redis cannot answer.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import jwt
import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from app.core.config import Settings
from app.core.tokens import key_id
from app.db.token_versions import version_key
from devstack.servers import free_port
from tests.api.helpers import PASSWORD, auth, register
from tests.conftest import TEST_SECRET
from tests.support.apps import serve

SettingsFactory = Callable[..., Settings]
NEW_PASSWORD = "a-brand-new-passphrase"
OTHER_KEY = "another-signing-key-that-is-long-enough-42"
THIRD_KEY = "yet-another-signing-key-long-enough-0987654"


async def _statuses(client: AsyncClient, token: str, followee: str) -> dict[str, int]:
    """What each kind of route answers to `token`."""
    headers = auth(token)
    return {
        "loads the account": (await client.get("/api/user", headers=headers)).status_code,
        "id-only read": (await client.get("/api/articles/feed", headers=headers)).status_code,
        "optional auth": (await client.get("/api/articles", headers=headers)).status_code,
        "id-only write": (
            await client.post(f"/api/profiles/{followee}/follow", headers=headers)
        ).status_code,
    }


REVOKED = {
    "loads the account": 401,
    "id-only read": 401,
    "optional auth": 401,
    "id-only write": 401,
}
WORKING = {
    "loads the account": 200,
    "id-only read": 200,
    "optional auth": 200,
    "id-only write": 200,
}


async def _change_password(client: AsyncClient, token: str) -> str:
    response = await client.put(
        "/api/user", json={"user": {"password": NEW_PASSWORD}}, headers=auth(token)
    )
    assert response.status_code == 200, response.text
    new_token: str = response.json()["user"]["token"]
    return new_token


async def test_password_change_revokes_every_earlier_token(client: AsyncClient) -> None:
    owner = await register(client)
    followee = await register(client)
    stolen = owner["token"]
    login = await client.post(
        "/api/users/login", json={"user": {"email": owner["email"], "password": PASSWORD}}
    )
    other_device = login.json()["user"]["token"]
    assert await _statuses(client, stolen, followee["username"]) == WORKING

    fresh = await _change_password(client, other_device)

    assert await _statuses(client, stolen, followee["username"]) == REVOKED
    assert await _statuses(client, other_device, followee["username"]) == REVOKED
    assert await _statuses(client, fresh, followee["username"]) == WORKING
    refused = await client.get("/api/user", headers=auth(stolen))
    # The same answer as for any bad token: nothing tells the thief why.
    assert refused.json()["errors"]["body"] == ["token is invalid or expired"]
    assert refused.json()["code"] == "invalid_token"
    # The old password is gone; the new one logs in, and its token works.
    old = await client.post(
        "/api/users/login", json={"user": {"email": owner["email"], "password": PASSWORD}}
    )
    assert old.status_code == 401
    new = await client.post(
        "/api/users/login", json={"user": {"email": owner["email"], "password": NEW_PASSWORD}}
    )
    assert new.status_code == 200
    assert await _statuses(client, new.json()["user"]["token"], followee["username"]) == WORKING


async def test_email_change_revokes_and_a_profile_edit_does_not(client: AsyncClient) -> None:
    owner = await register(client)
    followee = await register(client)
    edited = await client.put(
        "/api/user", json={"user": {"bio": "still me"}}, headers=auth(owner["token"])
    )
    assert edited.status_code == 200
    assert await _statuses(client, owner["token"], followee["username"]) == WORKING
    # The same email again changes nothing either.
    same = await client.put(
        "/api/user", json={"user": {"email": owner["email"]}}, headers=auth(owner["token"])
    )
    assert await _statuses(client, owner["token"], followee["username"]) == WORKING

    moved = await client.put(
        "/api/user",
        json={"user": {"email": f"moved-{owner['username']}@example.com"}},
        headers=auth(same.json()["user"]["token"]),
    )
    assert moved.status_code == 200
    assert await _statuses(client, owner["token"], followee["username"]) == REVOKED
    assert await _statuses(client, moved.json()["user"]["token"], followee["username"]) == WORKING


async def test_revocation_rides_on_the_rate_limiters_round_trip(
    settings_factory: SettingsFactory,
) -> None:
    limits = {"RATE_LIMIT_ENABLED": True, "RATE_LIMIT_DEFAULT": "1000/minute"}
    async with serve(settings_factory(**limits)) as client:
        owner = await register(client)
        stolen = owner["token"]
        fresh = await _change_password(client, stolen)
        resources = client.app.state.resources  # type: ignore[attr-defined]
        user_id = jwt.decode(fresh, options={"verify_signature": False})["sub"]
        key = version_key(int(user_id))
        assert await resources.redis.client.get(key) == b"1"
        # It lives as long as a token does (and a minute), then has nothing left to revoke.
        lifetime = resources.settings.JWT_EXPIRE_MINUTES * 60
        assert lifetime < await resources.redis.client.ttl(key) <= lifetime + 60

        # The limiter's script read the version with its count: the route asks nobody.
        asked: list[int] = []
        original = resources.token_versions.current

        async def spy(user: int) -> int | None:
            asked.append(user)
            version: int | None = await original(user)
            return version

        resources.token_versions.current = spy
        feed = await client.get("/api/articles/feed", headers=auth(stolen))
        assert feed.status_code == 401
        assert "ratelimit-limit" in feed.headers
        assert (await client.get("/api/articles/feed", headers=auth(fresh))).status_code == 200
        assert asked == []


async def test_published_version_never_goes_down(app: FastAPI) -> None:
    versions = app.state.resources.token_versions
    await versions.publish(987654, 3)
    await versions.publish(987654, 2)  # a slower request's older change, arriving late
    assert await versions.current(987654) == 3


@pytest.mark.parametrize("redis", ["unreachable", "not configured"])
async def test_revoked_without_redis_postgres_decides(
    settings_factory: SettingsFactory, redis: str
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0" if redis == "unreachable" else None
    async with serve(settings_factory(REDIS_URL=url)) as client:
        owner = await register(client)
        followee = await register(client)
        stolen = owner["token"]
        fresh = await _change_password(client, stolen)
        assert await _statuses(client, stolen, followee["username"]) == REVOKED
        assert await _statuses(client, fresh, followee["username"]) == WORKING


async def test_token_of_a_deleted_account_is_refused_by_postgres(
    settings_factory: SettingsFactory,
) -> None:
    async with serve(settings_factory(REDIS_URL=None)) as client:
        owner = await register(client)
        engine = client.app.state.resources.engine  # type: ignore[attr-defined]
        async with engine.begin() as connection:
            from sqlalchemy import text

            await connection.execute(
                text("DELETE FROM users WHERE username = :name"), {"name": owner["username"]}
            )
        assert (
            await client.get("/api/articles/feed", headers=auth(owner["token"]))
        ).status_code == 401


# --- key rotation ---------------------------------------------------------------------------


def _header(token: str) -> dict[str, object]:
    header: dict[str, object] = jwt.get_unverified_header(token)
    return header


async def test_key_rotation_keeps_sessions_until_the_old_key_is_dropped(
    settings_factory: SettingsFactory,
) -> None:
    async with serve(settings_factory(SECRET_KEY=TEST_SECRET)) as before:
        user = await register(before)
    old_token = user["token"]
    assert _header(old_token)["kid"] == key_id(TEST_SECRET)

    # Step 1 of the procedure: a new SECRET_KEY, the old one moved to SECRET_KEY_PREVIOUS.
    rotated = settings_factory(
        SECRET_KEY=OTHER_KEY, SECRET_KEY_PREVIOUS=f"{THIRD_KEY},{TEST_SECRET}"
    )
    async with serve(rotated) as during:
        me = await during.get("/api/user", headers=auth(old_token))
        assert me.status_code == 200, me.text
        # Every token handed out from now on is signed by the new key.
        reissued = me.json()["user"]["token"]
        assert _header(reissued)["kid"] == key_id(OTHER_KEY)
        assert (await during.get("/api/articles/feed", headers=auth(old_token))).status_code == 200

    # Step 2, once the old tokens have expired: the old key is removed.
    async with serve(settings_factory(SECRET_KEY=OTHER_KEY)) as after:
        assert (await after.get("/api/user", headers=auth(old_token))).status_code == 401
        assert (await after.get("/api/articles/feed", headers=auth(old_token))).status_code == 401
        assert (await after.get("/api/user", headers=auth(reissued))).status_code == 200


def _forge(claims: dict[str, object], secret: str, header: dict[str, object]) -> str:
    return jwt.encode(claims, secret, algorithm="HS256", headers=header)


async def test_kid_is_bound_to_its_key(settings_factory: SettingsFactory) -> None:
    settings = settings_factory(SECRET_KEY=OTHER_KEY, SECRET_KEY_PREVIOUS=TEST_SECRET)
    async with serve(settings) as client:
        user = await register(client)
        claims = jwt.decode(user["token"], OTHER_KEY, algorithms=["HS256"])
        # Signed by a listed key, but naming the other one: refused, not tried against both.
        mislabelled = _forge(claims, TEST_SECRET, {"kid": key_id(OTHER_KEY)})
        unknown = _forge(claims, OTHER_KEY, {"kid": "0123456789abcdef"})
        # Issued before key ids existed: tried against each configured key (no logouts).
        legacy = _forge(claims, TEST_SECRET, {})
        for token, expected in ((mislabelled, 401), (unknown, 401), (legacy, 200)):
            response = await client.get("/api/user", headers=auth(token))
            assert response.status_code == expected, (token, response.text)


async def test_tokens_without_a_version_read_as_version_zero(client: AsyncClient) -> None:
    """Tokens issued before versions existed keep working until the first change."""
    user = await register(client)
    claims = jwt.decode(user["token"], TEST_SECRET, algorithms=["HS256"])
    del claims["ver"]
    legacy = _forge(claims, TEST_SECRET, {})
    assert (await client.get("/api/user", headers=auth(legacy))).status_code == 200
    await _change_password(client, user["token"])
    assert (await client.get("/api/user", headers=auth(legacy))).status_code == 401
    assert (await client.get("/api/articles/feed", headers=auth(legacy))).status_code == 401


@pytest.mark.parametrize("version", [-1, "1", 1.5, True, None])
async def test_a_malformed_version_is_refused(client: AsyncClient, version: object) -> None:
    user = await register(client)
    claims = jwt.decode(user["token"], TEST_SECRET, algorithms=["HS256"])
    claims["ver"] = version
    forged = _forge(claims, TEST_SECRET, {"kid": key_id(TEST_SECRET)})
    assert (await client.get("/api/articles/feed", headers=auth(forged))).status_code == 401


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_a_raised_version_cannot_be_forged(client: AsyncClient) -> None:
    """A thief cannot lift the stolen token past the revocation: the signature covers `ver`."""
    user = await register(client)
    stolen = user["token"]
    await _change_password(client, stolen)
    header, payload, signature = stolen.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["ver"] = 99
    lifted = f"{header}.{_b64(claims)}.{signature}"
    assert (await client.get("/api/articles/feed", headers=auth(lifted))).status_code == 401
