"""Password hashing (Argon2id, off the event loop) and JWT encoding/decoding (PyJWT, HS256).

Hashing runs in worker threads behind a small capacity limiter: a login storm queues for the
limiter instead of starving the event loop or the default thread pool.
"""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime, timedelta

import anyio
import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

JWT_ALGORITHM = "HS256"
# Concurrent hash computations per process; each takes ARGON2_MEMORY_KIB and a core for ~20 ms.
HASHING_CONCURRENCY = 2
# OWASP's Argon2id recommendation (m=19 MiB, t=2, p=1): as strong per hash as RFC 9106's
# low-memory profile for this threat model, at a third of the memory, which keeps a worker under
# its 150 MB budget while logins hash concurrently. Hashes made with other parameters still
# verify, and are upgraded on the next successful login (`needs_rehash`).
ARGON2_TIME_COST = 2
ARGON2_MEMORY_KIB = 19 * 1024
ARGON2_PARALLELISM = 1
# Verified tokens remembered per process: a client sends the same token on every request, and
# the rate limiter and the route both need its user id.
VERIFIED_TOKEN_CACHE = 4096


@functools.cache
def _hasher() -> PasswordHasher:
    return PasswordHasher(
        time_cost=ARGON2_TIME_COST,
        memory_cost=ARGON2_MEMORY_KIB,
        parallelism=ARGON2_PARALLELISM,
    )


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


def needs_rehash(password_hash: str) -> bool:
    """The stored hash was made with other parameters than today's."""
    return _hasher().check_needs_rehash(password_hash)


class InvalidTokenError(Exception):
    """The token is malformed, tampered with, expired or not ours."""


def create_access_token(user_id: int, secret: str, expire_minutes: int) -> str:
    now = datetime.now(UTC)
    claims = {"sub": str(user_id), "iat": now, "exp": now + timedelta(minutes=expire_minutes)}
    return jwt.encode(claims, secret, algorithm=JWT_ALGORITHM)


def decode_access_token(token: str, secret: str) -> int:
    """The user id in `sub`; raises InvalidTokenError for anything but a valid, live token."""
    try:
        user_id, expires_at = _verified_claims(token, secret)
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise InvalidTokenError(str(exc)) from exc
    # A remembered token is still checked against the clock on every use.
    if time.time() >= expires_at:
        raise InvalidTokenError("Signature has expired")
    return user_id


@functools.lru_cache(maxsize=VERIFIED_TOKEN_CACHE)
def _verified_claims(token: str, secret: str) -> tuple[int, float]:
    """(user id, expiry) of a token whose signature and claims verify; errors are not cached.

    Safe to memoise: a signature verifies forever for the same token and secret, and expiry is
    the only claim that changes with time.
    """
    claims = jwt.decode(
        token,
        secret,
        algorithms=[JWT_ALGORITHM],
        options={"require": ["exp", "iat", "sub"]},
    )
    return int(claims["sub"]), float(claims["exp"])


def token_from_header(authorization: str | None) -> str | None:
    """`Token <jwt>` (RealWorld) or `Bearer <jwt>`; None when absent or another scheme."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() not in ("token", "bearer") or not credentials.strip():
        return None
    return credentials.strip()
