"""Password hashing (Argon2id, off the event loop). Access tokens are app/core/tokens.py.

Hashing runs in worker threads behind a small capacity limiter: a login storm queues for the
limiter instead of starving the event loop or the default thread pool.
"""

from __future__ import annotations

import functools

import anyio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from app.core.hashing_queue import hashing_admitted

# Concurrent hash computations per process; each takes ARGON2_MEMORY_KIB and a core for ~20 ms.
HASHING_CONCURRENCY = 2
# OWASP's Argon2id recommendation (m=19 MiB, t=2, p=1): as strong per hash as RFC 9106's
# low-memory profile for this threat model, at a third of the memory, which keeps a worker under
# its 150 MB budget while logins hash concurrently. Hashes made with other parameters still
# verify, and are upgraded on the next successful login (`needs_rehash`).
ARGON2_TIME_COST = 2
ARGON2_MEMORY_KIB = 19 * 1024
ARGON2_PARALLELISM = 1


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
    with hashing_admitted(HASHING_CONCURRENCY):
        return await anyio.to_thread.run_sync(_hasher().hash, password, limiter=_hashing_limiter())


async def verify_password(password_hash: str | None, password: str) -> bool:
    """False for a wrong password and for a missing user (None), in about the same time."""
    with hashing_admitted(HASHING_CONCURRENCY):
        return await anyio.to_thread.run_sync(
            _verify_sync, password_hash, password, limiter=_hashing_limiter()
        )


def needs_rehash(password_hash: str) -> bool:
    """The stored hash was made with other parameters than today's."""
    return _hasher().check_needs_rehash(password_hash)
