"""The sliding window counter's arithmetic: the estimate, remaining and Retry-After figures."""

from __future__ import annotations

import pytest
from limits import parse

from app.resilience.rate_limit import KEY_PREFIX, Rule, Window, window_decision


def test_window_position_and_previous_weight() -> None:
    window = Window.at(1_000_015.0, 60)  # 1_000_015 = 16_666 * 60 + 55
    assert (window.index, window.elapsed, window.period) == (16_666, 55.0, 60)
    assert window.previous_weight == pytest.approx(5 / 60)
    assert Window.at(120.0, 60).previous_weight == 1.0  # the very start: all of it still counts


def test_a_fresh_client_is_counted_exactly() -> None:
    window = Window.at(30.0, 60)
    decision = window_decision(5, window, allowed=True, previous=0, current=3)
    assert (decision.allowed, decision.remaining) == (True, 2)
    assert decision.reset_after == 30  # the current window closes in 30 s


def test_the_previous_window_counts_by_its_remaining_overlap() -> None:
    # 45 s into the window, a quarter of the previous one still overlaps: 8 * 0.25 + 2 = 4.
    decision = window_decision(10, Window.at(45.0, 60), allowed=True, previous=8, current=2)
    assert decision.remaining == 6


def test_refused_by_a_full_current_window_waits_for_it_to_slide_out() -> None:
    # 10 s before the end, current = limit = 5: after the window turns, 5 * (1 - t/60) + 1 <= 5
    # once t >= 12 s; so 10 + 12 = 22 s.
    decision = window_decision(5, Window.at(50.0, 60), allowed=False, previous=0, current=5)
    assert (decision.allowed, decision.remaining, decision.reset_after) == (False, 0, 22)
    assert (b"retry-after", b"22") in decision.headers()


def test_refused_by_the_previous_window_waits_for_its_weight_to_drop() -> None:
    # 6 s in: weight 0.9; 10 * 0.9 + 0 + 1 > 5. Room once 10 * w + 1 <= 5, w <= 0.4, i.e. 36 s in.
    decision = window_decision(5, Window.at(6.0, 60), allowed=False, previous=10, current=0)
    assert (decision.allowed, decision.remaining, decision.reset_after) == (False, 0, 30)


def test_retry_after_is_at_least_one_second() -> None:
    decision = window_decision(5, Window.at(59.9999, 60), allowed=False, previous=6, current=0)
    assert dict(decision.headers())[b"retry-after"] == b"1"


@pytest.mark.parametrize("client", ["ip:127.0.0.1", "user:42", "ip:::1", "ip:unknown"])
def test_rule_keys_are_limits_keys_under_our_prefix(client: str) -> None:
    """Built around the client once per rule; the same key `limits` would build per hit."""
    rule = Rule("login", parse("10/minute"))
    assert rule.redis_key(client) == f"{KEY_PREFIX}:{rule.item.key_for('login', client)}"
    assert rule.redis_key(client) != Rule("default", parse("10/minute")).redis_key(client)
