"""An async circuit breaker: closed -> open after N consecutive failures -> half-open after a
cool-down, where exactly one trial call decides between closed and open again.

While open, calls fail at once with CircuitOpenError, so a dead dependency costs nothing per
request. Time comes from a monotonic clock (injectable for tests).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import TypeVar

from app.core.logging_config import get_logger

log = get_logger(__name__)
T = TypeVar("T")


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


# Numeric encoding for the circuit_breaker_state gauge.
STATE_VALUES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class CircuitOpenError(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(f"circuit breaker '{name}' is open")
        self.name = name


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 5.0,
        failure_types: tuple[type[BaseException], ...] = (Exception,),
        clock: Callable[[], float] = time.monotonic,
        on_state_change: Callable[[str, BreakerState], None] | None = None,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.failure_types = failure_types
        self._clock = clock
        self._on_state_change = on_state_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_running = False
        self._lock = asyncio.Lock()

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._cooled_down():
            return BreakerState.HALF_OPEN
        return self._state

    def _cooled_down(self) -> bool:
        return self._clock() - self._opened_at >= self.reset_timeout

    def _transition(self, state: BreakerState) -> None:
        if state is self._state:
            return
        log.warning("circuit_breaker_state_changed", breaker=self.name, state=state.value)
        self._state = state
        if self._on_state_change:
            self._on_state_change(self.name, state)

    async def _admit(self) -> bool:
        """Whether this call may run; True means it is the half-open trial call."""
        state: BreakerState = self._state
        if state is BreakerState.CLOSED:
            # The common case, decided without the lock: nothing awaits between this check
            # and the return, so no other task can change the state in between.
            return False
        async with self._lock:
            if self._state is BreakerState.CLOSED:
                return False
            if self._state is BreakerState.OPEN and self._cooled_down():
                self._transition(BreakerState.HALF_OPEN)
            if self._state is BreakerState.HALF_OPEN and not self._trial_running:
                self._trial_running = True
                return True
            raise CircuitOpenError(self.name)

    def _record_success(self, trial: bool) -> None:
        if self._state is not BreakerState.CLOSED and not trial:
            return  # admitted before the circuit opened: only the trial call decides
        self._failures = 0
        self._trial_running = False
        self._transition(BreakerState.CLOSED)

    def _record_failure(self, trial: bool) -> None:
        if self._state is not BreakerState.CLOSED and not trial:
            return  # a straggler must not restart the cool-down
        self._trial_running = False
        self._failures += 1
        if trial or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
            self._transition(BreakerState.OPEN)

    async def call(self, func: Callable[[], Awaitable[T]]) -> T:
        trial = await self._admit()
        try:
            result = await func()
        except self.failure_types:
            self._record_failure(trial)
            raise
        except BaseException:
            # Not a dependency failure (e.g. cancellation): free the trial slot, decide nothing.
            if trial:
                self._trial_running = False
            raise
        self._record_success(trial)
        return result
