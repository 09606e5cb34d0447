"""The per-account login limit's key (normalised, hashed email) and the hashing queue's bound."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from app.core.hashing_queue import (
    HASHING_MAX_WAITING,
    HashingBusyError,
    hashes_pending,
    hashing_admitted,
)
from app.resilience.login_throttle import account_key, normalise_email


def test_an_email_is_trimmed_and_lower_cased() -> None:
    assert normalise_email("  Jake@Example.COM\t") == "jake@example.com"


def test_every_spelling_of_an_email_is_one_account() -> None:
    spellings = ["jake@example.com", " JAKE@example.com", "Jake@Example.Com \n"]
    assert len({account_key(email) for email in spellings}) == 1


def test_the_key_is_the_sha256_of_the_normalised_email_never_the_email() -> None:
    key = account_key(" Jake@Example.com")
    assert key == "account:" + hashlib.sha256(b"jake@example.com").hexdigest()
    assert "jake" not in key.lower()
    assert "example" not in key.lower()
    assert account_key("jake@example.org") != key


async def test_hashes_past_the_waiting_bound_are_refused_at_once() -> None:
    concurrency = 2
    full = concurrency + HASHING_MAX_WAITING
    release = asyncio.Event()

    async def hold_a_place() -> None:  # a task of its own, as each request is
        with hashing_admitted(concurrency):
            await release.wait()

    holders = [asyncio.create_task(hold_a_place()) for _ in range(full)]
    await asyncio.sleep(0)
    assert hashes_pending() == full
    with pytest.raises(HashingBusyError) as refused, hashing_admitted(concurrency):
        pass
    assert refused.value.status_code == 503
    assert refused.value.code == "service_busy"
    assert refused.value.headers == {"Retry-After": "1"}
    release.set()
    await asyncio.gather(*holders)
    assert hashes_pending() == 0


def test_a_hash_inside_an_admitted_login_keeps_the_logins_place() -> None:
    with hashing_admitted(2):
        assert hashes_pending() == 1
        with hashing_admitted(2):
            assert hashes_pending() == 1
    assert hashes_pending() == 0
