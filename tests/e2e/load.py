"""Load for the end-to-end deploy tests: clients that read and write through the API while a
release is deployed behind nginx, and the figures that tell whether the deploy failed any request.

The generator runs its own event loop in a background thread, so a synchronous test can start
it, deploy, mark the phases, stop it and then ask for each phase's figures:

    users = asyncio.run(seed_users(url, 16))
    load = LoadGenerator(url, users).start()
    load.mark("deploy_start"); deploy(); load.mark("deploy_end")
    load.stop()
    table = format_table([("deploy", load.window("deploy_start", "deploy_end"), seconds)])

A success is an HTTP answer that is neither a 5xx nor a 429: a 404 or a 422 is the API's answer
(and a bug of the workload, kept per status so it shows), while a 5xx, a 429, a timeout or a
broken connection is what a deploy must never cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

Kind = Literal["ok", "5xx", "429", "timeout", "connect_error", "other_error"]
FAILURE_KINDS: tuple[Kind, ...] = ("5xx", "429", "timeout", "connect_error", "other_error")
# Short names for the table: a row has to fit in a terminal.
_SHORT_KIND = {
    "5xx": "5xx",
    "429": "429",
    "timeout": "timeout",
    "connect_error": "conn",
    "other_error": "other",
}

START_MARK = "start"
STOP_MARK = "stop"
PASSWORD = "load-test-password"
MAX_EXAMPLES = 10


class SeedError(RuntimeError):
    """The API refused a seeding request: the load would measure nothing meaningful."""


@dataclass(frozen=True)
class User:
    username: str
    token: str
    slug: str  # the article created for this user at seeding

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}


@dataclass(frozen=True)
class Outcome:
    """One request: monotonic start and end, what was asked and how it ended."""

    started: float
    ended: float
    method: str
    path: str  # the template, e.g. /api/articles/{slug}: figures group by it
    status: int | None  # None when no HTTP answer came
    kind: Kind
    error: str | None = None  # the exception's class name when no answer came

    @property
    def succeeded(self) -> bool:
        return self.kind == "ok"

    @property
    def latency_ms(self) -> float:
        return (self.ended - self.started) * 1000


@dataclass(frozen=True)
class FailureExample:
    method: str
    path: str
    status: int | None
    kind: Kind
    error: str | None
    at_ms: float  # when the failure was seen, from the window's start
    latency_ms: float

    def __str__(self) -> str:
        answer = str(self.status) if self.status is not None else self.error
        return f"+{self.at_ms:.0f} ms {self.method} {self.path}: {answer} ({self.kind})"


@dataclass(frozen=True)
class WindowStats:
    seconds: float
    requests: int
    ok: int
    failures: dict[str, int]  # every kind of FAILURE_KINDS, zeros included
    client_errors: dict[int, int]  # 4xx other than 429, by status: successes, but worth seeing
    longest_gap_ms: float  # the longest stretch of the window without a successful answer
    p50_ms: float | None  # of answered requests; None when nothing was answered
    p99_ms: float | None
    examples: list[FailureExample] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


def classify(status: int) -> Kind:
    if status == 429:
        return "429"
    return "5xx" if status >= 500 else "ok"


def _overlaps(outcome: Outcome, start: float, end: float) -> bool:
    # A request in flight at any moment of the window belongs to it: one sent just before a
    # deploy started and broken by it counts against the deploy. Requests on a boundary
    # therefore count in both windows, on purpose.
    return outcome.started <= end and outcome.ended >= start


def longest_gap(success_ends: Iterable[float], start: float, end: float) -> float:
    """The longest interval of [start, end] holding no success end time, in seconds.

    The window's edges count as bounds: a window that opens or closes on a stretch of failures
    shows that stretch, and a window without any success is one gap as long as itself."""
    inside = sorted(t for t in success_ends if start <= t <= end)
    points = [start, *inside, end]
    return max(later - earlier for earlier, later in itertools.pairwise(points))


def percentile(sorted_values: Sequence[float], share: float) -> float | None:
    """Nearest-rank percentile (`share` in 0..1): always one of the measured values."""
    if not sorted_values:
        return None
    rank = max(math.ceil(share * len(sorted_values)), 1)
    return sorted_values[rank - 1]


def _example(outcome: Outcome, start: float) -> FailureExample:
    return FailureExample(
        method=outcome.method,
        path=outcome.path,
        status=outcome.status,
        kind=outcome.kind,
        error=outcome.error,
        at_ms=(outcome.ended - start) * 1000,
        latency_ms=outcome.latency_ms,
    )


def _client_errors(outcomes: Iterable[Outcome]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for outcome in outcomes:
        if outcome.status is not None and 400 <= outcome.status < 500 and outcome.succeeded:
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
    return dict(sorted(counts.items()))


def window_stats(outcomes: Iterable[Outcome], start: float, end: float) -> WindowStats:
    """The figures of the requests in flight at some moment of [start, end] (monotonic)."""
    if end < start:
        raise ValueError(f"window ends ({end}) before it starts ({start})")
    inside = [o for o in outcomes if _overlaps(o, start, end)]
    failed = sorted((o for o in inside if not o.succeeded), key=lambda o: o.ended)
    failures: dict[str, int] = dict.fromkeys(FAILURE_KINDS, 0)
    for outcome in failed:
        failures[outcome.kind] += 1
    latencies = sorted(o.latency_ms for o in inside if o.status is not None)
    gap = longest_gap((o.ended for o in inside if o.succeeded), start, end)
    return WindowStats(
        seconds=end - start,
        requests=len(inside),
        ok=len(inside) - len(failed),
        failures=failures,
        client_errors=_client_errors(inside),
        longest_gap_ms=gap * 1000,
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        examples=[_example(o, start) for o in failed[:MAX_EXAMPLES]],
    )


# --- seeding ---------------------------------------------------------------------------------


def _checked(response: httpx.Response, expected: int) -> dict[str, Any]:
    if response.status_code != expected:
        raise SeedError(
            f"{response.request.method} {response.request.url.path}: "
            f"{response.status_code} (expected {expected}): {response.text}"
        )
    body: dict[str, Any] = response.json()
    return body


async def _seed_user(http: httpx.AsyncClient, username: str) -> User:
    user = {"username": username, "email": f"{username}@example.com", "password": PASSWORD}
    registered = _checked(await http.post("/api/users", json={"user": user}), 201)
    token: str = registered["user"]["token"]
    article = {
        "title": f"Load article of {username}",
        "description": "Seeded for the load generator",
        "body": "Something for the readers to read.",
        "tagList": ["load"],
    }
    headers = {"Authorization": f"Token {token}"}
    created = _checked(
        await http.post("/api/articles", json={"article": article}, headers=headers), 201
    )
    return User(username=username, token=token, slug=created["article"]["slug"])


async def seed_users(base_url: str, count: int) -> list[User]:
    """Register `count` users with one article each; raise SeedError on any refusal."""
    run = uuid.uuid4().hex[:8]  # several seedings against one database must not collide
    async with httpx.AsyncClient(base_url=base_url, timeout=30.0) as http:
        # One after the other: registering hashes a password (CPU-bound on the server), and
        # seeding is not what is measured.
        return [await _seed_user(http, f"load-{run}-{index}") for index in range(count)]


# --- the workload ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # the template recorded in the Outcome
    url: str
    body: dict[str, Any] | None = None
    authed: bool = False
    # Run on a 2xx answer: how a client learns new slugs and its favourites.
    on_success: Callable[[httpx.Response], None] | None = None


@dataclass
class ClientState:
    user: User
    slugs: list[str]  # shared by all clients: one event loop thread, so no lock
    rng: random.Random
    favourites: set[str] = field(default_factory=set)

    def any_slug(self) -> str:
        return self.rng.choice(self.slugs)


def list_articles(_: ClientState) -> Call:
    return Call("GET", "/api/articles?limit=10", "/api/articles?limit=10")


def get_article(state: ClientState) -> Call:
    return Call("GET", "/api/articles/{slug}", f"/api/articles/{state.any_slug()}")


def get_tags(_: ClientState) -> Call:
    return Call("GET", "/api/tags", "/api/tags")


def get_user(_: ClientState) -> Call:
    return Call("GET", "/api/user", "/api/user", authed=True)


def create_article(state: ClientState) -> Call:
    def learn_slug(response: httpx.Response) -> None:
        state.slugs.append(response.json()["article"]["slug"])

    article = {
        "title": f"Load {uuid.uuid4().hex[:12]}",
        "description": "Written under load",
        "body": "Written while a release was being deployed.",
        "tagList": ["load", state.rng.choice(["deploy", "nginx", "uvicorn"])],
    }
    return Call(
        "POST",
        "/api/articles",
        "/api/articles",
        body={"article": article},
        authed=True,
        on_success=learn_slug,
    )


def add_comment(state: ClientState) -> Call:
    slug = state.any_slug()
    body = {"comment": {"body": f"Comment {uuid.uuid4().hex[:8]}"}}
    template = "/api/articles/{slug}/comments"
    return Call("POST", template, f"/api/articles/{slug}/comments", body=body, authed=True)


def toggle_favourite(state: ClientState) -> Call:
    # Alternating favourite and unfavourite makes every call change a row: a repeated favourite
    # would be a no-op write.
    slug = state.any_slug()
    method = "DELETE" if slug in state.favourites else "POST"

    def remember(_: httpx.Response) -> None:
        if method == "POST":
            state.favourites.add(slug)
        else:
            state.favourites.discard(slug)

    url = f"/api/articles/{slug}/favorite"
    return Call(method, "/api/articles/{slug}/favorite", url, authed=True, on_success=remember)


Operation = Callable[[ClientState], Call]
READS: tuple[tuple[Operation, int], ...] = (
    (list_articles, 2),
    (get_article, 2),
    (get_tags, 1),
    (get_user, 1),
)
WRITES: tuple[tuple[Operation, int], ...] = (
    (create_article, 1),
    (add_comment, 2),
    (toggle_favourite, 2),
)


def next_call(state: ClientState, write_share: float) -> Call:
    table = WRITES if state.rng.random() < write_share else READS
    operations = [operation for operation, _ in table]
    weights = [weight for _, weight in table]
    return state.rng.choices(operations, weights)[0](state)


def _failure(call: Call, started: float, kind: Kind, error: BaseException | str) -> Outcome:
    name = error if isinstance(error, str) else type(error).__name__
    return Outcome(started, time.monotonic(), call.method, call.path, None, kind, name)


async def send(
    http: httpx.AsyncClient, call: Call, user: User
) -> tuple[Outcome, httpx.Response | None]:
    """Make one call; any failure to get an answer becomes an Outcome, never an exception."""
    started = time.monotonic()
    headers = user.headers if call.authed else None
    try:
        response = await http.request(call.method, call.url, json=call.body, headers=headers)
    except httpx.TimeoutException as exc:  # ConnectTimeout included: no answer within the limit
        return _failure(call, started, "timeout", exc), None
    except httpx.ConnectError as exc:
        return _failure(call, started, "connect_error", exc), None
    except Exception as exc:  # a reset or a closed connection: a failure like any other
        return _failure(call, started, "other_error", exc), None
    status = response.status_code
    ended = time.monotonic()
    return Outcome(started, ended, call.method, call.path, status, classify(status)), response


class LoadGenerator:
    """`clients` concurrent API clients in a background event loop, every request recorded.

    start() and stop() are called from synchronous code; mark() names moments to slice the
    run with window(). Outcomes are appended from the loop's thread under a lock."""

    def __init__(
        self,
        base_url: str,
        users: Sequence[User],
        *,
        clients: int = 16,
        think_time: float = 0.02,
        timeout: float = 5.0,
        write_share: float = 0.4,
        seed: int | None = None,
    ) -> None:
        if not users:
            raise ValueError("the load needs at least one seeded user")
        self.base_url = base_url
        self.users = list(users)
        self.clients = clients
        self.think_time = think_time
        self.timeout = timeout
        self.write_share = write_share
        self.seed = seed
        self._lock = threading.Lock()
        self._outcomes: list[Outcome] = []
        self._marks: dict[str, float] = {}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._grace = timeout + 1.0
        self._error: BaseException | None = None

    # --- control, from the caller's thread ---

    def start(self) -> LoadGenerator:
        if self._thread is not None:
            raise RuntimeError("a LoadGenerator runs once")
        self._thread = threading.Thread(target=self._run, name="load-generator", daemon=True)
        self._thread.start()
        self._ready.wait()
        self._raise_if_failed()
        return self

    def stop(self, grace: float | None = None) -> None:
        """Stop sending; wait up to `grace` seconds (default: the timeout and one second) for
        requests in flight, so that a request a deploy breaks at the last moment still counts."""
        if self._thread is None:
            raise RuntimeError("the load was not started")
        if self._thread.is_alive() and self._loop is not None:
            if grace is not None:
                self._grace = grace
            # The loop may have ended on an error in the meantime: reported just below.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._begin_stop)
            self._thread.join()
        self._raise_if_failed()

    def mark(self, name: str) -> float:
        """Record the present moment under `name` (unique) and return it. "start" and "stop"
        are the generator's own: set by start() and stop()."""
        if name in (START_MARK, STOP_MARK):
            raise ValueError(f"mark {name!r} is set by the generator itself")
        return self._set_mark(name)

    def marks(self) -> dict[str, float]:
        with self._lock:
            return dict(self._marks)

    def outcomes(self) -> list[Outcome]:
        with self._lock:
            return list(self._outcomes)

    def window(self, start: str, end: str | None = None) -> WindowStats:
        """The figures between two marks; without `end`, up to now (or the stop, once stopped)."""
        marks = self.marks()
        missing = [name for name in (start, end) if name is not None and name not in marks]
        if missing:
            raise KeyError(f"no mark {missing}; marks: {sorted(marks)}")
        until = marks[end] if end is not None else marks.get(STOP_MARK, time.monotonic())
        return window_stats(self.outcomes(), marks[start], until)

    def stats(self) -> WindowStats:
        """The whole run: from start() to stop() (or now)."""
        return self.window(START_MARK)

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _set_mark(self, name: str) -> float:
        now = time.monotonic()
        with self._lock:
            if name in self._marks:
                raise ValueError(f"mark {name!r} already recorded")
            self._marks[name] = now
        return now

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError("the load generator failed") from self._error

    # --- the loop's thread ---

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:  # reported by start() or stop(), in the caller's thread
            self._error = exc
        finally:
            self._ready.set()  # start() must not wait forever on a loop that failed early
            self._loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        self._set_mark(START_MARK)
        slugs = [user.slug for user in self.users]
        tasks = [asyncio.create_task(self._client(index, slugs)) for index in range(self.clients)]
        self._ready.set()
        await self._stopping.wait()
        _, pending = await asyncio.wait(tasks, timeout=self._grace)
        for task in pending:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [r for r in results if isinstance(r, Exception)]
        if errors:  # a bug of the workload, not of the server: it must not pass silently
            raise errors[0]

    def _begin_stop(self) -> None:
        # Marked in the loop's thread: each client checks the event before it sends, in the
        # same step as it takes the start time, so no request starts after the stop mark.
        assert self._stopping is not None
        self._set_mark(STOP_MARK)
        self._stopping.set()

    def _record(self, outcome: Outcome) -> None:
        with self._lock:
            self._outcomes.append(outcome)

    async def _client(self, index: int, slugs: list[str]) -> None:
        rng = random.Random(None if self.seed is None else self.seed * 1000 + index)
        state = ClientState(user=self.users[index % len(self.users)], slugs=slugs, rng=rng)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout) as http:
            while not self._stopping_now():
                await self._one_request(http, state)
                await self._think(rng)

    async def _one_request(self, http: httpx.AsyncClient, state: ClientState) -> None:
        call = next_call(state, self.write_share)
        started = time.monotonic()
        try:
            outcome, response = await send(http, call, state.user)
        except asyncio.CancelledError:
            # Still unanswered `grace` seconds after the stop: longer than the timeout, so
            # counted as one rather than lost.
            self._record(_failure(call, started, "timeout", "CancelledAtStop"))
            raise
        self._record(outcome)
        if response is not None and response.is_success and call.on_success is not None:
            with contextlib.suppress(ValueError, KeyError, TypeError):  # an odd body: ignored
                call.on_success(response)

    async def _think(self, rng: random.Random) -> None:
        # Jittered, so the clients do not fall into step; cut short by stop().
        assert self._stopping is not None
        pause = self.think_time * rng.uniform(0.5, 1.5)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), pause)

    def _stopping_now(self) -> bool:
        return self._stopping is None or self._stopping.is_set()


# --- report ----------------------------------------------------------------------------------


def compact_failures(stats: WindowStats) -> str:
    return " ".join(f"{_SHORT_KIND[kind]}={stats.failures.get(kind, 0)}" for kind in FAILURE_KINDS)


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


HEADERS = ("phase", "requests", "failed", "failures", "4xx", "gap ms", "p99 ms", "op s")
# Text columns read left-aligned, figures right-aligned.
_LEFT = {0, 3}


def _cells(name: str, stats: WindowStats, seconds: float | None) -> tuple[str, ...]:
    return (
        name,
        str(stats.requests),
        str(stats.failed),
        compact_failures(stats),
        str(sum(stats.client_errors.values())),
        _number(stats.longest_gap_ms, 0),
        _number(stats.p99_ms, 1),
        _number(seconds, 1),
    )


def format_table(rows: list[tuple[str, WindowStats, float | None]]) -> str:
    """One line per phase: its requests, failures (total and by kind), 4xx answers, the
    longest stretch without a success, p99 latency and the operation's duration."""
    lines = [HEADERS, *(_cells(name, stats, seconds) for name, stats, seconds in rows)]
    widths = [max(len(line[column]) for line in lines) for column in range(len(HEADERS))]

    def render(line: tuple[str, ...]) -> str:
        cells = (
            cell.ljust(width) if column in _LEFT else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        )
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([render(lines[0]), rule, *(render(line) for line in lines[1:])])
