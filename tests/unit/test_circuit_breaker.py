"""The circuit breaker's state machine, driven by an injected clock (no sleeping)."""

from __future__ import annotations

import asyncio

import pytest

from app.resilience.circuit_breaker import (
    STATE_VALUES,
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Dependency:
    """An async callable that fails while `failing` is set and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.failing = False

    async def __call__(self) -> str:
        self.calls += 1
        if self.failing:
            raise ConnectionError("dependency down")
        return "ok"


def state_of(breaker: CircuitBreaker) -> BreakerState:
    # A function call, so mypy does not narrow the property across awaits.
    return breaker.state


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def changes() -> list[tuple[str, BreakerState]]:
    return []


@pytest.fixture
def breaker(clock: FakeClock, changes: list[tuple[str, BreakerState]]) -> CircuitBreaker:
    return CircuitBreaker(
        "dep",
        failure_threshold=3,
        reset_timeout=10.0,
        failure_types=(ConnectionError,),
        clock=clock,
        on_state_change=lambda name, state: changes.append((name, state)),
    )


async def _fail_times(breaker: CircuitBreaker, dep: Dependency, times: int) -> None:
    dep.failing = True
    for _ in range(times):
        with pytest.raises(ConnectionError):
            await breaker.call(dep)


async def test_stays_closed_below_threshold(breaker: CircuitBreaker) -> None:
    dep = Dependency()
    await _fail_times(breaker, dep, 2)
    assert state_of(breaker) is BreakerState.CLOSED
    dep.failing = False
    assert await breaker.call(dep) == "ok"
    # A success resets the count: failures must be consecutive to open the circuit.
    await _fail_times(breaker, dep, 2)
    assert state_of(breaker) is BreakerState.CLOSED


async def test_opens_after_threshold_and_fails_fast(
    breaker: CircuitBreaker, changes: list[tuple[str, BreakerState]]
) -> None:
    dep = Dependency()
    await _fail_times(breaker, dep, 3)
    assert state_of(breaker) is BreakerState.OPEN
    assert changes == [("dep", BreakerState.OPEN)]

    dep.failing = False
    calls_before = dep.calls
    for _ in range(5):
        with pytest.raises(CircuitOpenError) as raised:
            await breaker.call(dep)
        assert raised.value.name == "dep"
    assert dep.calls == calls_before, "an open breaker must not call the dependency"


async def test_non_failure_exceptions_do_not_count(breaker: CircuitBreaker) -> None:
    async def buggy() -> None:
        raise ValueError("a bug, not an outage")

    for _ in range(10):
        with pytest.raises(ValueError, match="a bug"):
            await breaker.call(buggy)
    assert state_of(breaker) is BreakerState.CLOSED


async def test_half_open_after_cool_down(breaker: CircuitBreaker, clock: FakeClock) -> None:
    dep = Dependency()
    await _fail_times(breaker, dep, 3)
    clock.advance(9.9)
    assert state_of(breaker) is BreakerState.OPEN
    with pytest.raises(CircuitOpenError):
        await breaker.call(dep)
    clock.advance(0.1)
    assert state_of(breaker) is BreakerState.HALF_OPEN


async def test_half_open_admits_exactly_one_concurrent_trial(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    dep = Dependency()
    await _fail_times(breaker, dep, 3)
    clock.advance(10)

    release = asyncio.Event()
    trial_calls = 0

    async def slow_trial() -> str:
        nonlocal trial_calls
        trial_calls += 1
        await release.wait()
        return "recovered"

    trial = asyncio.create_task(breaker.call(slow_trial))
    await asyncio.sleep(0)  # let the trial get admitted and block
    others = [asyncio.create_task(breaker.call(slow_trial)) for _ in range(5)]
    results = await asyncio.gather(*others, return_exceptions=True)
    assert all(isinstance(r, CircuitOpenError) for r in results), results
    assert trial_calls == 1
    assert state_of(breaker) is BreakerState.HALF_OPEN

    release.set()
    assert await trial == "recovered"
    assert state_of(breaker) is BreakerState.CLOSED


async def test_trial_success_closes(
    breaker: CircuitBreaker, clock: FakeClock, changes: list[tuple[str, BreakerState]]
) -> None:
    dep = Dependency()
    await _fail_times(breaker, dep, 3)
    clock.advance(10)
    dep.failing = False
    assert await breaker.call(dep) == "ok"
    assert state_of(breaker) is BreakerState.CLOSED
    assert [state for _, state in changes] == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.CLOSED,
    ]
    # Closed again: every call goes through.
    for _ in range(3):
        assert await breaker.call(dep) == "ok"


async def test_trial_failure_reopens_for_a_full_cool_down(
    breaker: CircuitBreaker, clock: FakeClock, changes: list[tuple[str, BreakerState]]
) -> None:
    dep = Dependency()
    await _fail_times(breaker, dep, 3)
    clock.advance(10)
    await _fail_times(breaker, dep, 1)  # the single trial fails
    assert state_of(breaker) is BreakerState.OPEN
    assert [state for _, state in changes] == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.OPEN,
    ]
    calls = dep.calls
    clock.advance(9.9)
    with pytest.raises(CircuitOpenError):
        await breaker.call(dep)
    assert dep.calls == calls
    clock.advance(0.1)
    dep.failing = False
    assert await breaker.call(dep) == "ok"
    assert state_of(breaker) is BreakerState.CLOSED


async def test_cancelled_trial_frees_the_slot(breaker: CircuitBreaker, clock: FakeClock) -> None:
    dep = Dependency()
    await _fail_times(breaker, dep, 3)
    clock.advance(10)

    async def hangs() -> None:
        await asyncio.Event().wait()

    trial = asyncio.create_task(breaker.call(hangs))
    await asyncio.sleep(0)
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    dep.failing = False
    assert await breaker.call(dep) == "ok"
    assert state_of(breaker) is BreakerState.CLOSED


def test_state_values_cover_every_state() -> None:
    assert set(STATE_VALUES) == set(BreakerState)
    assert STATE_VALUES[BreakerState.CLOSED] == 0
    assert STATE_VALUES[BreakerState.OPEN] == 2


async def test_straggler_from_before_opening_does_not_decide(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    """A slow call admitted while closed must neither close the circuit nor free the trial slot
    when it finishes after the circuit opened: only the half-open trial decides."""
    dep = Dependency()
    release_straggler = asyncio.Event()

    async def straggler() -> str:
        await release_straggler.wait()
        return "late"

    late = asyncio.create_task(breaker.call(straggler))
    await asyncio.sleep(0)
    await _fail_times(breaker, dep, 3)
    clock.advance(10)

    release_trial = asyncio.Event()

    async def slow_trial() -> str:
        await release_trial.wait()
        raise ConnectionError("still down")

    trial = asyncio.create_task(breaker.call(slow_trial))
    await asyncio.sleep(0)
    release_straggler.set()
    assert await late == "late"
    assert state_of(breaker) is BreakerState.HALF_OPEN
    dep.failing = False
    calls = dep.calls
    with pytest.raises(CircuitOpenError):
        await breaker.call(dep)
    assert dep.calls == calls

    release_trial.set()
    with pytest.raises(ConnectionError):
        await trial
    assert state_of(breaker) is BreakerState.OPEN


async def test_straggler_failure_does_not_extend_the_cool_down(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    release = asyncio.Event()

    async def straggler() -> None:
        await release.wait()
        raise ConnectionError("late failure")

    late = asyncio.create_task(breaker.call(straggler))
    await asyncio.sleep(0)
    await _fail_times(breaker, Dependency(), 3)
    clock.advance(9)
    release.set()
    with pytest.raises(ConnectionError):
        await late
    clock.advance(1)
    assert state_of(breaker) is BreakerState.HALF_OPEN
