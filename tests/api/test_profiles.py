"""Profiles, follow and unfollow (idempotent), cached public profile."""

from __future__ import annotations

from httpx import AsyncClient

from tests.api.helpers import auth, error_messages, register


async def test_profile_anonymous_and_personalised(client: AsyncClient) -> None:
    celeb = await register(client, "celeb", bio="famous")
    fan = await register(client, "fan")
    anonymous = await client.get("/api/profiles/celeb")
    assert anonymous.status_code == 200
    assert anonymous.json() == {
        "profile": {"username": "celeb", "bio": None, "image": None, "following": False}
    }
    followed = await client.post("/api/profiles/celeb/follow", headers=auth(fan["token"]))
    assert followed.status_code == 200
    assert followed.json()["profile"]["following"] is True
    seen_by_fan = await client.get("/api/profiles/celeb", headers=auth(fan["token"]))
    assert seen_by_fan.json()["profile"]["following"] is True
    seen_by_self = await client.get("/api/profiles/celeb", headers=auth(celeb["token"]))
    assert seen_by_self.json()["profile"]["following"] is False


async def test_follow_and_unfollow_are_idempotent(client: AsyncClient) -> None:
    await register(client, "target")
    fan = await register(client, "follower")
    for _ in range(2):
        response = await client.post("/api/profiles/target/follow", headers=auth(fan["token"]))
        assert response.status_code == 200
        assert response.json()["profile"]["following"] is True
    for _ in range(2):
        response = await client.delete("/api/profiles/target/follow", headers=auth(fan["token"]))
        assert response.status_code == 200
        assert response.json()["profile"]["following"] is False


async def test_follow_errors(client: AsyncClient) -> None:
    me = await register(client, "loner")
    assert (await client.post("/api/profiles/loner/follow")).status_code == 401
    missing = await client.post("/api/profiles/ghost/follow", headers=auth(me["token"]))
    assert missing.status_code == 404
    assert missing.json()["code"] == "profile_not_found"
    myself = await client.post("/api/profiles/loner/follow", headers=auth(me["token"]))
    assert myself.status_code == 422
    assert error_messages(myself) == ["username cannot be followed by yourself"]
    assert (await client.get("/api/profiles/ghost")).status_code == 404


async def test_profile_update_is_visible_on_next_read(client: AsyncClient) -> None:
    """The profile is cached in Redis; a write must invalidate it."""
    user = await register(client, "changing")
    first = await client.get("/api/profiles/changing")
    assert first.json()["profile"]["bio"] is None
    await client.put("/api/user", json={"user": {"bio": "new bio"}}, headers=auth(user["token"]))
    second = await client.get("/api/profiles/changing")
    assert second.json()["profile"]["bio"] == "new bio"
