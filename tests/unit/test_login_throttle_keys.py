"""The per-account login limit's key (normalised, hashed email) and the hashing queue's bound."""

from __future__ import annotations

import hashlib

import pytest

from app.core.hashing_queue import (
    HASHING_MAX_WAITING,
    HashingBusyError,
    hashes_pending,
    hashing_admitted,
    refuse_if_full,
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


def test_hashes_past_the_waiting_bound_are_refused_at_once() -> None:
    concurrency = 2
    admitted = [hashing_admitted(concurrency) for _ in range(concurrency + HASHING_MAX_WAITING)]
    for place in admitted:
        place.__enter__()
    try:
        assert hashes_pending() == concurrency + HASHING_MAX_WAITING
        with pytest.raises(HashingBusyError) as refused, hashing_admitted(concurrency):
            pass
        with pytest.raises(HashingBusyError):
            refuse_if_full(concurrency)
        assert refused.value.status_code == 503
        assert refused.value.code == "service_busy"
        assert refused.value.headers == {"Retry-After": "1"}
    finally:
        for place in admitted:
            place.__exit__(None, None, None)
    assert hashes_pending() == 0
    refuse_if_full(concurrency)
    with hashing_admitted(concurrency):
        assert hashes_pending() == 1
