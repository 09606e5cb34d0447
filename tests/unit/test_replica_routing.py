"""The replica choice's pure parts: round robin over usable replicas, open breakers skipped, the
read-your-writes window, and the settings' validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.core.config import Settings
from app.db.recent_writes import window_seconds
from app.db.replicas import Replica, ReplicaSet, replica_address
from app.resilience.circuit_breaker import BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def replica_set(*usable: bool, clock: Clock | None = None) -> ReplicaSet:
    replicas = [
        Replica(
            f"replica-{index}",
            "-",
            None,  # type: ignore[arg-type]  # pick() never touches the engine
            CircuitBreaker(f"replica-{index}", failure_threshold=1, clock=clock or Clock()),
            0.0,
            None,
            ok,
        )
        for index, ok in enumerate(usable)
    ]
    chosen = ReplicaSet(replicas, None, max_lag=5, interval=1)  # type: ignore[arg-type]
    chosen._usable = tuple(r for r in replicas if r.usable)  # as a check leaves it
    return chosen


def test_no_usable_replica_means_the_primary() -> None:
    assert replica_set().pick() is None
    assert replica_set(False, False).pick() is None


def test_usable_replicas_take_turns() -> None:
    replicas = replica_set(True, False, True)
    names = [replicas.pick().name for _ in range(4)]  # type: ignore[union-attr]
    assert names == ["replica-0", "replica-2", "replica-0", "replica-2"]


async def test_a_replica_whose_breaker_opened_since_the_last_check_is_skipped() -> None:
    clock = Clock()
    replicas = replica_set(True, True, clock=clock)
    first = replicas.replicas[0]

    async def fail() -> None:
        raise ConnectionError

    with pytest.raises(ConnectionError):
        await first.breaker.call(fail)
    assert first.breaker.state is BreakerState.OPEN
    assert {replicas.pick().name for _ in range(4)} == {"replica-1"}  # type: ignore[union-attr]
    with pytest.raises(ConnectionError):
        await replicas.replicas[1].breaker.call(fail)
    assert replicas.pick() is None


def test_the_window_outlasts_the_lag_a_serving_replica_may_have() -> None:
    # Max lag, plus the age of the last check, plus a margin.
    assert window_seconds(5, 1) == 7
    assert window_seconds(0.5, 0.2) == pytest.approx(1.7)


def test_replica_urls_are_listed_and_normalised() -> None:
    settings = Settings(
        _env_file=None,
        DATABASE_REPLICA_URLS="postgresql://u:p@r1:5432/db, postgresql+asyncpg://u:p@r2/db",
    )
    assert settings.DATABASE_REPLICA_URLS == [
        "postgresql+asyncpg://u:p@r1:5432/db",
        "postgresql+asyncpg://u:p@r2/db",
    ]
    assert Settings(_env_file=None).DATABASE_REPLICA_URLS == []
    assert replica_address(settings.DATABASE_REPLICA_URLS[1]) == "r2:5432/db"  # no password


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_REPLICA_URLS", "mysql://r1/db"),
        ("DATABASE_REPLICA_MAX_LAG_SECONDS", "0"),
        ("DATABASE_REPLICA_CHECK_SECONDS", "-1"),
        ("DATABASE_REPLICA_POOL_SIZE", "0"),
    ],
)
def test_bad_replica_settings_are_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(ValidationError, match=name):
        Settings(_env_file=None, **{name: value})  # type: ignore[arg-type]
