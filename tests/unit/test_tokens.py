"""Access tokens without a server: key ids, key sets, versions, and what is cached."""

from __future__ import annotations

import time

import jwt
import pytest

from app.core.tokens import (
    InvalidTokenError,
    TokenClaims,
    create_access_token,
    decode_access_token,
    key_id,
    signing_keys,
)

CURRENT = "current-signing-key-0123456789abcdef0123"
PREVIOUS = "previous-signing-key-0123456789abcdef012"


def test_key_id_is_stable_short_and_not_the_key() -> None:
    assert key_id(CURRENT) == key_id(CURRENT)
    assert key_id(CURRENT) != key_id(PREVIOUS)
    assert len(key_id(CURRENT)) == 16
    assert key_id(CURRENT) not in CURRENT


def test_the_signing_key_comes_first_and_duplicates_go() -> None:
    keys = signing_keys(CURRENT, (PREVIOUS, CURRENT))
    assert keys.signing_kid == key_id(CURRENT)
    assert [kid for kid, _ in keys.verifying] == [key_id(CURRENT), key_id(PREVIOUS)]


def test_version_and_kid_are_in_the_token() -> None:
    token = create_access_token(42, signing_keys(CURRENT), 5, version=3)
    assert jwt.get_unverified_header(token)["kid"] == key_id(CURRENT)
    assert decode_access_token(token, signing_keys(CURRENT)) == TokenClaims(42, 3)


def test_previous_keys_verify_but_never_sign() -> None:
    old = create_access_token(7, signing_keys(PREVIOUS), 5)
    rotated = signing_keys(CURRENT, (PREVIOUS,))
    assert decode_access_token(old, rotated).user_id == 7
    assert jwt.get_unverified_header(create_access_token(7, rotated, 5))["kid"] == key_id(CURRENT)
    with pytest.raises(InvalidTokenError):
        decode_access_token(old, signing_keys(CURRENT))


def test_a_remembered_token_still_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = signing_keys(CURRENT)
    token = create_access_token(1, keys, 1)
    assert decode_access_token(token, keys).user_id == 1  # verified, and now cached
    later = time.time() + 61
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(InvalidTokenError, match="expired"):
        decode_access_token(token, keys)


@pytest.mark.parametrize(
    "header", [{"kid": ""}, {"kid": "feedfeedfeedfeed"}, {"kid": key_id(PREVIOUS)}]
)
def test_a_kid_that_names_no_configured_key_is_refused(header: dict[str, object]) -> None:
    keys = signing_keys(CURRENT)
    claims = {"sub": "1", "iat": int(time.time()), "exp": int(time.time()) + 60}
    token = jwt.encode(claims, CURRENT, algorithm="HS256", headers=header)
    with pytest.raises(InvalidTokenError):
        decode_access_token(token, keys)
