"""Retry policies: transient errors only, exponential backoff, bounded attempts and deadline."""

from __future__ import annotations

import time
from collections.abc import MutableMapping, Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter
from structlog.testing import capture_logs
from tenacity import AsyncRetrying

from app.resilience.retry import retry_policy, run_with_retry


class TransientError(Exception):
    pass


class Flaky:
    """Fails with `error` for the first `failures` calls, then returns "done"."""

    def __init__(self, failures: int, error: type[Exception] = TransientError) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error(f"failure {self.calls}")
        return "done"


def _retries(logs: Sequence[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == "retry_scheduled"]


async def _exhaust(policy: AsyncRetrying, flaky: Flaky) -> None:
    async for attempt in policy:
        with attempt:
            await flaky()


async def test_transient_errors_are_retried_until_success() -> None:
    flaky = Flaky(failures=2)
    with capture_logs() as logs:
        result = await run_with_retry(flaky, (TransientError,), attempts=3, operation="load_tags")
    assert result == "done"
    assert flaky.calls == 3
    retries = _retries(logs)
    assert [r["attempt"] for r in retries] == [1, 2]
    for entry in retries:
        assert entry["log_level"] == "warning"
        assert entry["operation"] == "load_tags"
        assert entry["error"] == "TransientError"
        assert isinstance(entry["sleep_seconds"], float)
        assert entry["sleep_seconds"] > 0


async def test_attempts_are_bounded_and_last_error_reraised() -> None:
    flaky = Flaky(failures=100)
    with capture_logs() as logs, pytest.raises(TransientError, match="failure 4"):
        await run_with_retry(flaky, (TransientError,), attempts=4, deadline=30)
    assert flaky.calls == 4
    assert len(_retries(logs)) == 3


async def test_backoff_grows_exponentially() -> None:
    flaky = Flaky(failures=100)
    policy = retry_policy((TransientError,), attempts=4, deadline=30, initial=0.02, max_wait=1.0)
    with capture_logs() as logs, pytest.raises(TransientError):
        await _exhaust(policy, flaky)
    sleeps = [float(r["sleep_seconds"]) for r in _retries(logs)]
    # initial * 2**n plus jitter in [0, initial]: [0.02, 0.04], [0.04, 0.06], [0.08, 0.10].
    assert len(sleeps) == 3
    for n, sleep in enumerate(sleeps):
        assert 0.02 * 2**n <= sleep <= 0.02 * 2**n + 0.02 + 0.001, sleeps


async def test_backoff_is_capped() -> None:
    flaky = Flaky(failures=100)
    policy = retry_policy((TransientError,), attempts=5, deadline=30, initial=0.02, max_wait=0.05)
    with capture_logs() as logs, pytest.raises(TransientError):
        await _exhaust(policy, flaky)
    assert all(float(r["sleep_seconds"]) <= 0.05 for r in _retries(logs))


async def test_non_transient_errors_are_not_retried() -> None:
    flaky = Flaky(failures=1, error=ValueError)
    with capture_logs() as logs, pytest.raises(ValueError, match="failure 1"):
        await run_with_retry(flaky, (TransientError,), attempts=5)
    assert flaky.calls == 1
    assert _retries(logs) == []


async def test_deadline_bounds_the_whole_operation() -> None:
    """With attempts to spare, the deadline stops retrying: no backoff may end past it."""
    flaky = Flaky(failures=1000)
    deadline = 0.5
    policy = retry_policy((TransientError,), attempts=1000, deadline=deadline, initial=0.05)
    started = time.monotonic()
    with capture_logs() as logs, pytest.raises(TransientError):
        await _exhaust(policy, flaky)
    elapsed = time.monotonic() - started
    slept = sum(float(r["sleep_seconds"]) for r in _retries(logs))
    assert 2 <= flaky.calls < 10
    assert slept < deadline, f"scheduled {slept:.3f}s of backoff for a {deadline}s deadline"
    assert elapsed < deadline + 1.0  # generous: a loaded machine oversleeps a little


async def test_operation_name_defaults_to_the_function() -> None:
    flaky = Flaky(failures=1)
    with capture_logs() as logs:
        await run_with_retry(flaky.__call__, (TransientError,))
    assert _retries(logs)[0]["operation"] == "Flaky.__call__"


async def test_each_retry_is_counted_by_operation() -> None:
    registry = CollectorRegistry()
    retries = Counter("retries_total", "retries", ["operation"], registry=registry)
    flaky = Flaky(2)
    result = await run_with_retry(
        flaky, (TransientError,), attempts=3, operation="cache_get", retries=retries
    )
    assert result == "done"
    assert registry.get_sample_value("retries_total", {"operation": "cache_get"}) == 2
    # The first attempt that succeeds costs nothing and counts nothing.
    await run_with_retry(Flaky(0), (TransientError,), operation="cache_get", retries=retries)
    assert registry.get_sample_value("retries_total", {"operation": "cache_get"}) == 2
