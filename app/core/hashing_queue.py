"""A bound on the password hashes waiting in this process.

Argon2 runs HASHING_CONCURRENCY hashes at a time (app.core.security); the others wait for a
slot. Waiting costs little memory, but every waiting login holds its request and its client:
under a login flood the queue would grow without bound, and every login and registration,
honest ones included, would wait behind it until clients time out. Past HASHING_MAX_WAITING
hashes waiting, a request is refused at once with 503 `service_busy` and Retry-After, which
clients and load balancers act on. (A login holds no database connection while it waits: the
login service closes its lookup's session first.)

Per process and without a lock: admission is decided on the event loop, between awaits.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from app.core.error_handlers import ServiceUnavailableError

# Hashes allowed to wait for a slot, per process. It bounds how long an admitted login waits
# (~0.2 s at ~25 ms a hash, 2 at a time, on free cores) and how many guesses a burst gets past
# the per-account login limit before its first failure is counted (2 + 16 per worker; see
# app.resilience.login_throttle). A constant like HASHING_CONCURRENCY, which it follows from.
HASHING_MAX_WAITING = 16
HASHING_BUSY_RETRY_AFTER_SECONDS = 1


class HashingBusyError(ServiceUnavailableError):
    code, message = "service_busy", "The server is busy; retry shortly"


class _Pending:
    """Hashes running or waiting in this process."""

    def __init__(self) -> None:
        self.count = 0


@functools.cache
def _pending() -> _Pending:
    return _Pending()


# Set while a task holds a place: a caller may take it before work that leads to a hash (the
# login takes it before its user lookup, so a flood it refuses costs no database round trip,
# and no more logins than places look users up at once), and the hash inside then uses it.
_holding: ContextVar[bool] = ContextVar("holding_hashing_place", default=False)


@contextmanager
def hashing_admitted(concurrency: int) -> Iterator[None]:
    """Hold a place among the running or waiting hashes (or keep the one this task holds), or
    raise HashingBusyError at once."""
    if _holding.get():
        yield
        return
    pending = _pending()
    if pending.count >= concurrency + HASHING_MAX_WAITING:
        raise HashingBusyError(retry_after=HASHING_BUSY_RETRY_AFTER_SECONDS)
    pending.count += 1
    holding = _holding.set(True)
    try:
        yield
    finally:
        _holding.reset(holding)
        pending.count -= 1


def hashes_pending() -> int:
    """Hashes running or waiting now (tests and the bench read it)."""
    return _pending().count
