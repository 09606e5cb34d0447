"""The e2e load generator: window figures and the table on made-up outcomes, then the generator
for real: against a canned HTTP server that answers, fails with 503, stalls past the timeout and
goes away; and against the real app, where the seeded workload must fail nothing."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from devstack.servers import PostgresServer
from tests.e2e.load import (
    FAILURE_KINDS,
    Kind,
    LoadGenerator,
    Outcome,
    SeedError,
    User,
    WindowStats,
    classify,
    format_table,
    longest_gap,
    percentile,
    seed_users,
    window_stats,
)
from tests.support.databases import fresh_database
from tests.support.live import LiveServer


def outcome(
    started: float,
    ended: float,
    status: int | None = 200,
    kind: Kind | None = None,
    path: str = "/api/tags",
    error: str | None = None,
) -> Outcome:
    if kind is None:
        assert status is not None
        kind = classify(status)
    return Outcome(started, ended, "GET", path, status, kind, error)


# --- classification and figures --------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        *[(200, "ok"), (201, "ok"), (304, "ok"), (404, "ok"), (422, "ok"), (429, "429")],
        *[(500, "5xx"), (502, "5xx"), (503, "5xx"), (504, "5xx")],
    ],
)
def test_classify(status: int, kind: str) -> None:
    assert classify(status) == kind


def test_longest_gap_counts_the_window_edges() -> None:
    # Successes at 2, 3 and 9 in [0, 10]: the gap from the opening edge (2) loses to 3..9 (6).
    assert longest_gap([3.0, 2.0, 9.0], 0.0, 10.0) == pytest.approx(6.0)
    # A late first success: the stretch since the window opened is the gap.
    assert longest_gap([8.0, 9.0], 0.0, 10.0) == pytest.approx(8.0)
    # An early last success: the stretch until the window closes is the gap.
    assert longest_gap([1.0, 1.5], 0.0, 10.0) == pytest.approx(8.5)


def test_longest_gap_ignores_successes_outside_the_window() -> None:
    assert longest_gap([-5.0, 11.0, 20.0], 0.0, 10.0) == pytest.approx(10.0)
    assert longest_gap([0.0, 5.0, 10.0], 0.0, 10.0) == pytest.approx(5.0)


def test_longest_gap_of_an_empty_or_instant_window() -> None:
    assert longest_gap([], 4.0, 7.0) == pytest.approx(3.0)
    assert longest_gap([], 4.0, 4.0) == 0.0


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) is None


def test_window_takes_every_request_in_flight_during_it() -> None:
    outcomes = [
        outcome(0.0, 0.5),  # over before the window: out
        outcome(0.5, 1.5, status=502),  # sent before, failed inside: counts
        outcome(1.2, 1.4),
        outcome(1.9, 2.6, kind="timeout", status=None, error="ReadTimeout"),  # ends after: in
        outcome(2.1, 2.2, status=500),  # sent after the window: out
    ]
    stats = window_stats(outcomes, 1.0, 2.0)
    assert stats.requests == 3
    assert stats.ok == 1
    assert stats.failed == 2
    assert stats.failures == {
        "5xx": 1,
        "429": 0,
        "timeout": 1,
        "connect_error": 0,
        "other_error": 0,
    }
    # The only success ended at 1.4: 0.6 s without one until the window closes.
    assert stats.longest_gap_ms == pytest.approx(600.0)
    assert stats.seconds == pytest.approx(1.0)


def test_failures_do_not_close_a_gap_but_client_errors_do() -> None:
    outcomes = [
        outcome(0.0, 1.0, status=404),
        outcome(0.0, 2.0, status=503),
        outcome(0.0, 3.0, status=429),
        outcome(0.0, 4.0, status=None, kind="connect_error", error="ConnectError"),
        outcome(0.0, 5.0, status=None, kind="other_error", error="RemoteProtocolError"),
        outcome(0.0, 6.0, status=422),
    ]
    stats = window_stats(outcomes, 0.0, 10.0)
    # Successes (the 404 and the 422) at 1 and 6: the 5 s between them hold only failures.
    assert stats.longest_gap_ms == pytest.approx(5000.0)
    assert stats.ok == 2
    assert stats.client_errors == {404: 1, 422: 1}
    assert stats.failures["5xx"] == 1
    assert stats.failures["429"] == 1
    assert stats.failures["connect_error"] == 1
    assert stats.failures["other_error"] == 1


def test_latency_percentiles_are_of_answered_requests_only() -> None:
    outcomes = [outcome(0.0, 0.010), outcome(0.0, 0.020, status=503), outcome(0.0, 0.030)]
    outcomes.append(outcome(0.0, 5.0, status=None, kind="timeout", error="ReadTimeout"))
    stats = window_stats(outcomes, 0.0, 10.0)
    assert stats.p50_ms == pytest.approx(20.0)
    assert stats.p99_ms == pytest.approx(30.0)  # the 5 s timeout is not a latency


def test_an_empty_window() -> None:
    stats = window_stats([outcome(0.0, 1.0)], 2.0, 2.5)
    assert stats.requests == 0
    assert stats.ok == 0
    assert stats.failed == 0
    assert set(stats.failures) == set(FAILURE_KINDS)
    assert stats.longest_gap_ms == pytest.approx(500.0)
    assert stats.p50_ms is None
    assert stats.p99_ms is None
    assert stats.examples == []


def test_a_window_cannot_end_before_it_starts() -> None:
    with pytest.raises(ValueError, match="before it starts"):
        window_stats([], 2.0, 1.0)


def test_examples_are_the_first_ten_failures_as_seen() -> None:
    failures = [outcome(1.0, 1.0 + i / 10, status=500 + i % 4) for i in range(15, 0, -1)]
    stats = window_stats([*failures, outcome(1.0, 1.05)], 1.0, 3.0)
    assert len(stats.examples) == 10
    seen = [example.at_ms for example in stats.examples]
    assert seen == sorted(seen)
    first = stats.examples[0]
    assert first.at_ms == pytest.approx(100.0)
    assert first.status == 501
    assert first.kind == "5xx"
    assert str(first) == "+100 ms GET /api/tags: 501 (5xx)"
    timeout = window_stats([outcome(0.0, 5.0, None, "timeout", error="ReadTimeout")], 0, 6)
    assert str(timeout.examples[0]) == "+5000 ms GET /api/tags: ReadTimeout (timeout)"


# --- the table -------------------------------------------------------------------------------


def stats_of(**overrides: Any) -> WindowStats:
    values: dict[str, Any] = {
        "seconds": 10.0,
        "requests": 1234,
        "ok": 1234,
        "failures": dict.fromkeys(FAILURE_KINDS, 0),
        "client_errors": {},
        "longest_gap_ms": 41.6,
        "p50_ms": 3.0,
        "p99_ms": 12.34,
    }
    values.update(overrides)
    return WindowStats(**values)


def test_format_table() -> None:
    broken = stats_of(
        requests=80,
        ok=75,
        failures={**dict.fromkeys(FAILURE_KINDS, 0), "5xx": 3, "connect_error": 2},
        client_errors={404: 1},
        longest_gap_ms=2500.4,
        p99_ms=None,
    )
    table = format_table(
        [("before", stats_of(), None), ("deploy v2", broken, 12.345), ("after", stats_of(), 0.0)]
    )
    lines = table.splitlines()
    assert len(lines) == 5
    header, rule, before, deploy, after = lines
    assert header.split() == [
        "phase", "requests", "failed", "failures", "4xx", "gap", "ms", "p99", "ms", "op", "s",
    ]  # fmt: skip
    assert set(rule) == {"-", " "}
    assert before.split() == [
        "before", "1234", "0", "5xx=0", "429=0", "timeout=0", "conn=0", "other=0", "0", "42",
        "12.3", "-",
    ]  # fmt: skip
    assert deploy.split() == [
        "deploy", "v2", "80", "5", "5xx=3", "429=0", "timeout=0", "conn=2", "other=0", "1",
        "2500", "-", "12.3",
    ]  # fmt: skip
    assert after.split()[-1] == "0.0"
    # Fixed width: no cell spills into the space between the rule's columns, on any line.
    separators = [i for i, char in enumerate(rule) if char == " "]
    for line in (header, before, deploy, after):
        assert len(line) <= len(rule)
        assert all(i >= len(line) or line[i] == " " for i in separators), line
    assert deploy.index("5xx=3") == before.index("5xx=0")  # text columns start together
    assert deploy.index(" 2500 ") + 5 == before.index(" 42 ") + 3  # figures end together


def test_format_table_without_rows() -> None:
    assert format_table([]).splitlines()[0].split()[0] == "phase"


# --- for real: a canned server ---------------------------------------------------------------


class CannedServer(ThreadingHTTPServer):
    """Answers the load's paths with small JSON bodies; `mode` turns it into a failing server:
    "503" answers 503, "slow" answers only after `delay` seconds. Checks the auth header."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), CannedHandler)
        self.mode = "ok"
        self.delay = 1.0
        self.seen: list[tuple[str, str, str | None]] = []
        self.created = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out has gone before the slow answer: expected, not worth a trace.
        pass


class CannedHandler(BaseHTTPRequestHandler):
    # HTTP/1.0: one connection per request, so nothing keeps talking once the server is closed.
    server: CannedServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.answer()

    def do_POST(self) -> None:
        self.answer()

    def do_DELETE(self) -> None:
        self.answer()

    def answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        authorization = self.headers.get("Authorization")
        self.server.seen.append((self.command, self.path, authorization))
        if self.server.mode == "503":
            return self.reply(503, {"errors": {"body": ["down for maintenance"]}})
        if self.server.mode == "slow":
            time.sleep(self.server.delay)
        needs_auth = self.path == "/api/user" or self.command != "GET"
        if needs_auth and not (authorization or "").startswith("Token "):
            return self.reply(401, {"errors": {"body": ["unauthorized"]}})
        if (self.command, self.path) == ("POST", "/api/users"):
            return self.reply(201, {"user": {"token": "jwt"}})
        if (self.command, self.path) == ("POST", "/api/articles"):
            self.server.created += 1
            return self.reply(201, {"article": {"slug": f"new-{self.server.created}"}})
        return self.reply(200, {})

    def reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def canned() -> Iterator[CannedServer]:
    server = CannedServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


TIMEOUT = 0.3
SETTLE = TIMEOUT + 0.2  # after a mode change: the previous mode's requests are all over


def phase(load: LoadGenerator, name: str, seconds: float) -> WindowStats:
    time.sleep(SETTLE)
    load.mark(f"{name}_start")
    time.sleep(seconds)
    load.mark(f"{name}_end")
    return load.window(f"{name}_start", f"{name}_end")


@pytest.mark.slow
def test_load_generator_records_answers_and_each_kind_of_failure(canned: CannedServer) -> None:
    users = [User(f"user{i}", f"token-{i}", f"slug-{i}") for i in range(3)]
    load = LoadGenerator(canned.url, users, clients=4, think_time=0.01, timeout=TIMEOUT, seed=1)
    load.start()
    try:
        healthy = phase(load, "healthy", 0.6)
        canned.mode = "503"
        failing = phase(load, "failing", 0.4)
        canned.mode = "slow"
        stalled = phase(load, "stalled", 0.8)
        canned.shutdown()
        canned.server_close()
        gone = phase(load, "gone", 0.4)
    finally:
        load.stop()

    assert healthy.requests > 40
    assert healthy.failed == 0
    assert healthy.client_errors == {}  # the auth header went wherever it is needed
    assert healthy.longest_gap_ms < 300
    assert healthy.p99_ms is not None

    assert failing.requests > 10
    assert failing.failures["5xx"] == failing.requests == failing.failed
    assert failing.longest_gap_ms == pytest.approx(failing.seconds * 1000)
    assert failing.examples[0].status == 503

    assert stalled.failures["timeout"] == stalled.failed == stalled.requests >= 4
    assert {example.error for example in stalled.examples} == {"ReadTimeout"}
    assert stalled.p99_ms is None  # nothing was answered

    assert gone.failures["connect_error"] == gone.failed == gone.requests > 10
    assert {example.error for example in gone.examples} == {"ConnectError"}
    assert gone.longest_gap_ms == pytest.approx(gone.seconds * 1000)

    everything = load.stats()
    outcomes = load.outcomes()
    assert everything.requests == len(outcomes)
    assert everything.failures["5xx"] >= failing.failed
    assert all(o.started <= load.marks()["stop"] for o in outcomes)  # none sent after stop()
    writes = [o for o in outcomes if o.method != "GET"]
    assert 0.25 < len(writes) / len(outcomes) < 0.55  # roughly 40 % writes
    authorizations = {auth for method, _, auth in canned.seen if method != "GET"}
    assert authorizations <= {f"Token token-{i}" for i in range(3)}
    created = [o for o in outcomes if o.method == "POST" and o.path == "/api/articles"]
    assert created  # and their slugs were read back:
    assert any(path.startswith("/api/articles/new-") for _, path, _ in canned.seen)

    with pytest.raises(ValueError, match="already recorded"):
        load.mark("healthy_start")
    with pytest.raises(ValueError, match="by the generator itself"):
        load.mark("stop")
    with pytest.raises(KeyError, match="nowhere"):
        load.window("nowhere")


def test_seeding_reports_the_refusal(canned: CannedServer) -> None:
    canned.mode = "503"
    with pytest.raises(SeedError, match=r"POST /api/users: 503.*down for maintenance"):
        asyncio.run(seed_users(canned.url, 2))


def test_a_load_needs_users() -> None:
    with pytest.raises(ValueError, match="at least one"):
        LoadGenerator("http://127.0.0.1:9", [])


# --- for real: the app -----------------------------------------------------------------------


@pytest.mark.slow
def test_seeded_load_on_the_real_app_fails_nothing(
    base_env: dict[str, str], postgres: PostgresServer
) -> None:
    # A database of its own: the live server commits for real.
    env = {
        **base_env,
        "DATABASE_URL": fresh_database(postgres),
        "LOG_LEVEL": "WARNING",
        "SHUTDOWN_DRAIN_SECONDS": "0",
    }
    with LiveServer(env) as server:
        users = asyncio.run(seed_users(server.url, 4))
        assert len({user.username for user in users}) == 4
        assert all(user.token and user.slug for user in users)
        load = LoadGenerator(server.url, users, clients=8, seed=3).start()
        time.sleep(2.0)
        load.stop()

    stats = load.stats()
    assert stats.requests > 100
    assert stats.failed == 0, [str(example) for example in stats.examples]
    # No 4xx either: every request the workload builds is one the API accepts.
    assert stats.client_errors == {}
    assert {(o.method, o.path) for o in load.outcomes()} == {
        ("GET", "/api/articles?limit=10"),
        ("GET", "/api/articles/{slug}"),
        ("GET", "/api/tags"),
        ("GET", "/api/user"),
        ("POST", "/api/articles"),
        ("POST", "/api/articles/{slug}/comments"),
        ("POST", "/api/articles/{slug}/favorite"),
        ("DELETE", "/api/articles/{slug}/favorite"),
    }
