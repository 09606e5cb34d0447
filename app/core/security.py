"""Password hashing (Argon2id, off the event loop) and JWT encoding/decoding (PyJWT, HS256).

Hashing runs in worker threads behind a small capacity limiter: a login storm queues for the
limiter instead of starving the event loop or the default thread pool.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

import anyio
import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

JWT_ALGORITHM = "HS256"
# Concurrent hash computations per process; each takes ~64 MiB and a core for tens of ms.
HASHING_CONCURRENCY = 2


@functools.cache
def _hasher() -> PasswordHasher:
    return PasswordHasher()  # RFC 9106 low-memory profile: Argon2id, t=3, m=64 MiB, p=4


@functools.cache
def _hashing_limiter() -> anyio.CapacityLimiter:
    return anyio.CapacityLimiter(HASHING_CONCURRENCY)


@functools.cache
def _dummy_hash() -> str:
    # Verified against when the email is unknown, so both failures cost the same time.
    return _hasher().hash("conduit-api-timing-equaliser")


def _verify_sync(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher().verify(password_hash or _dummy_hash(), password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


async def hash_password(password: str) -> str:
    return await anyio.to_thread.run_sync(_hasher().hash, password, limiter=_hashing_limiter())


async def verify_password(password_hash: str | None, password: str) -> bool:
    """False for a wrong password and for a missing user (None), in about the same time."""
    return await anyio.to_thread.run_sync(
        _verify_sync, password_hash, password, limiter=_hashing_limiter()
    )


class InvalidTokenError(Exception):
    """The token is malformed, tampered with, expired or not ours."""


def create_access_token(user_id: int, secret: str, expire_minutes: int) -> str:
    now = datetime.now(UTC)
    claims = {"sub": str(user_id), "iat": now, "exp": now + timedelta(minutes=expire_minutes)}
    return jwt.encode(claims, secret, algorithm=JWT_ALGORITHM)


def decode_access_token(token: str, secret: str) -> int:
    """The user id in `sub`; raises InvalidTokenError for anything but a valid, live token."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[JWT_ALGORITHM],
            options={"require": ["exp", "iat", "sub"]},
        )
        return int(claims["sub"])
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise InvalidTokenError(str(exc)) from exc


def token_from_header(authorization: str | None) -> str | None:
    """`Token <jwt>` (RealWorld) or `Bearer <jwt>`; None when absent or another scheme."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() not in ("token", "bearer") or not credentials.strip():
        return None
    return credentials.strip()
