"""Retry policies on tenacity: exponential backoff with jitter, bounded attempts and deadline,
transient errors only, each retry logged and, when the caller hands in the app's
`retries_total` counter, counted by operation. Use them for idempotent operations only (reads, a
transaction that failed to serialise), never for a write that may already have happened.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from prometheus_client import Counter
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)

from app.core.logging_config import get_logger

log = get_logger(__name__)
T = TypeVar("T")


def _retry_logger(
    operation: str, retries: Counter | None = None
) -> Callable[[RetryCallState], None]:
    def log_retry(state: RetryCallState) -> None:
        if retries is not None:
            retries.labels(operation).inc()
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "retry_scheduled",
            operation=operation,
            attempt=state.attempt_number,
            sleep_seconds=round(state.next_action.sleep, 3) if state.next_action else None,
            error=type(exc).__name__ if exc else None,
        )

    return log_retry


def retry_policy(
    transient: tuple[type[BaseException], ...],
    *,
    attempts: int = 3,
    deadline: float = 2.0,
    initial: float = 0.05,
    max_wait: float = 1.0,
    operation: str = "call",
    retries: Counter | None = None,
) -> AsyncRetrying:
    """`deadline` bounds the whole operation: no retry starts whose backoff would end past it."""
    return AsyncRetrying(
        retry=retry_if_exception_type(transient),
        stop=stop_after_attempt(attempts) | stop_before_delay(deadline),
        wait=wait_exponential_jitter(multiplier=initial, max=max_wait, jitter=initial),
        before_sleep=_retry_logger(operation, retries),
        reraise=True,
    )


async def run_with_retry(
    func: Callable[[], Awaitable[T]],
    transient: tuple[type[BaseException], ...],
    *,
    attempts: int = 3,
    deadline: float = 2.0,
    operation: str | None = None,
    retries: Counter | None = None,
) -> T:
    """Run `func` under a fresh retry policy; the last error is re-raised when retries run out.

    The first attempt runs bare: building a tenacity policy costs more than a Redis GET, and
    most calls succeed at once. Its transient failure is handed to the policy as the policy's
    own first attempt, with the deadline shortened by the time it took, so attempts, backoff,
    logs and the deadline are those of the policy alone.
    """
    started = time.monotonic()
    try:
        return await func()
    except transient as exc:
        first_error: BaseException | None = exc
    name = operation or str(getattr(func, "__qualname__", "call"))
    remaining = deadline - (time.monotonic() - started)
    policy = retry_policy(
        transient, attempts=attempts, deadline=remaining, operation=name, retries=retries
    )
    async for attempt in policy:
        with attempt:
            if first_error is not None:
                error, first_error = first_error, None
                raise error
            return await func()
    raise AssertionError("unreachable: tenacity re-raises the last error")
