"""The structlog pipeline: secrets redacted, one JSON object per line for every logger."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog

from app.core import log_processors
from app.core.log_processors import REDACTED, UTCTimestamp, redact_secrets
from app.core.logging_config import configure_logging, get_logger


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging replaces the root handlers: put the session's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    structlog.contextvars.clear_contextvars()


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = text.splitlines()
    assert lines, "nothing was logged"
    records = []
    for line in lines:
        record = json.loads(line)  # fails on any line that is not one JSON document
        assert isinstance(record, dict), line
        records.append(record)
    return records


def test_redacts_sensitive_keys_at_any_depth() -> None:
    event: dict[str, Any] = {
        "event": "login_attempted",
        "Authorization": "Bearer abc",
        "password": "hunter2",
        "headers": {"Cookie": "session=1", "Accept": "*/*", "X-Api-Key": "k"},
        "user": {"email": "a@b.c", "credentials": {"new_password": "p", "refresh_token": "t"}},
        "items": [{"token": "t1"}, {"name": "ok"}],
        "raw_headers": [(b"authorization", b"Bearer xyz"), (b"accept", b"*/*")],
        "client_secret": "s",
    }
    out = redact_secrets(None, "info", event)
    assert out["event"] == "login_attempted"
    assert out["Authorization"] == REDACTED
    assert out["password"] == REDACTED
    assert out["client_secret"] == REDACTED
    assert out["headers"] == {"Cookie": REDACTED, "Accept": "*/*", "X-Api-Key": REDACTED}
    assert out["user"]["email"] == "a@b.c"
    assert out["user"]["credentials"] == {"new_password": REDACTED, "refresh_token": REDACTED}
    assert out["items"] == [{"token": REDACTED}, {"name": "ok"}]
    assert out["raw_headers"] == [[b"authorization", REDACTED], [b"accept", b"*/*"]]
    assert "Bearer" not in json.dumps(out, default=str)


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_for_structlog_stdlib_and_tracebacks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(level="DEBUG", log_format="json")
    log = get_logger("tests.logging")
    structlog.contextvars.bind_contextvars(request_id="req-123")
    log.info("user_logged_in", user_id=7, password="hunter2", headers={"authorization": "B x"})
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
    logging.getLogger("sqlalchemy.engine").warning("pool %s", "exhausted", extra={"token": "t"})
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        log.exception("unhandled_exception")
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")

    out = capsys.readouterr().out
    records = json_lines(out)
    assert len(records) == 5, out
    assert "hunter2" not in out
    assert "B x" not in out

    login, started, pool, struct_exc, stdlib_exc = records
    assert login["event"] == "user_logged_in"
    assert login["level"] == "info"
    assert login["request_id"] == "req-123"
    assert login["user_id"] == 7
    assert login["password"] == REDACTED
    assert "timestamp" in login

    assert started["event"] == "Started server process [42]"
    assert started["logger"] == "uvicorn.error"
    assert started["request_id"] == "req-123"  # context reaches foreign loggers too

    assert pool["event"] == "pool exhausted"
    assert pool["level"] == "warning"
    assert pool["token"] == REDACTED

    for record in (struct_exc, stdlib_exc):
        assert record["level"] == "error"
        frames = record["exception"]
        assert isinstance(frames, list)
        assert frames[0]["exc_type"] == "RuntimeError"
        assert frames[0]["exc_value"] == "boom\nsecond line"
        assert frames[0]["frames"], "the stack trace is kept"


@pytest.mark.usefixtures("restore_logging")
def test_level_filters_lines(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(level="WARNING", log_format="json")
    get_logger("tests.logging").info("too_quiet")
    logging.getLogger("uvicorn.error").info("also too quiet")
    get_logger("tests.logging").warning("loud_enough")
    records = json_lines(capsys.readouterr().out)
    assert [r["event"] for r in records] == ["loud_enough"]


@pytest.mark.usefixtures("restore_logging")
def test_uvicorn_access_log_is_off(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(level="DEBUG", log_format="json")
    logging.getLogger("uvicorn.access").info('127.0.0.1 - "GET / HTTP/1.1" 200')
    get_logger("tests.logging").info("marker")
    records = json_lines(capsys.readouterr().out)
    assert [r["event"] for r in records] == ["marker"]


@pytest.mark.usefixtures("restore_logging")
def test_log_files_rotate_and_errors_go_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_file, error_file = tmp_path / "app.log", tmp_path / "error.log"
    configure_logging(
        level="INFO",
        log_format="json",
        log_file=str(log_file),
        error_file=str(error_file),
        max_bytes=2048,
        backups=2,
    )
    log = get_logger("tests.logging")
    for n in range(60):
        log.info("filler_written", n=n, padding="x" * 40)
    log.error("something_failed")
    for handler in logging.getLogger().handlers:
        handler.flush()
    capsys.readouterr()

    rotated = sorted(p.name for p in tmp_path.glob("app.log*"))
    assert rotated == ["app.log", "app.log.1", "app.log.2"], "size and count limits apply"
    assert all(p.stat().st_size <= 2048 for p in tmp_path.glob("app.log*"))
    errors = json_lines(error_file.read_text())
    assert [r["event"] for r in errors] == ["something_failed"]
    assert json_lines(log_file.read_text())[-1]["event"] == "something_failed"


@pytest.mark.usefixtures("restore_logging")
def test_console_tracebacks_show_no_local_variables(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(level="INFO", log_format="console")
    log = get_logger("tests.logging")

    def handler(authorization: str) -> None:
        raise ValueError(f"failed for {len(authorization)} chars")

    try:
        handler("Token very-" + "secret-jwt")
    except ValueError:
        log.exception("unhandled_exception")
    out = capsys.readouterr().out
    assert "unhandled_exception" in out
    assert "ValueError" in out
    assert "very-secret-jwt" not in out


@pytest.mark.usefixtures("restore_logging")
def test_level_applies_to_loggers_uvicorn_configured(capsys: pytest.CaptureFixture[str]) -> None:
    """uvicorn's default config gives its loggers their own level (INFO) before the app is
    imported; LOG_LEVEL must still decide, both ways."""
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        configure_logging(level="WARNING", log_format="json")
        logging.getLogger("uvicorn.error").info("Started server process [1]")
        configure_logging(level="DEBUG", log_format="json")
        logging.getLogger("uvicorn.error").debug("debug detail")
        records = json_lines(capsys.readouterr().out)
        assert [r["event"] for r in records] == ["debug detail"]
    finally:
        for name in ("uvicorn", "uvicorn.error"):
            logging.getLogger(name).setLevel(logging.NOTSET)


@pytest.mark.usefixtures("restore_logging")
def test_json_tracebacks_carry_no_local_variables(capsys: pytest.CaptureFixture[str]) -> None:
    """Locals are rendered after redaction: a password argument would reach the log as is."""
    configure_logging(level="INFO", log_format="json")

    def login(password: str, authorization: str) -> None:
        raise ValueError("wrong credentials")

    for emit in (
        lambda: get_logger("tests.logging").exception("login_failed"),
        lambda: logging.getLogger("uvicorn.error").exception("login failed"),
    ):
        try:
            login("hunter2-" + "secret", "Token " + "jwt-value")
        except ValueError:
            emit()
    out = capsys.readouterr().out
    records = json_lines(out)
    assert len(records) == 2
    for record in records:
        frames = record["exception"][0]["frames"]
        assert [f["name"] for f in frames][-1] == "login", "the stack trace is kept"
        assert all("locals" not in frame for frame in frames)
    assert "hunter2-secret" not in out
    assert "jwt-value" not in out


@pytest.mark.usefixtures("restore_logging")
def test_per_logger_levels_apply_to_structlog_events(capsys: pytest.CaptureFixture[str]) -> None:
    """structlog's lines skip the stdlib's records and handlers, not its levels."""
    configure_logging(level="INFO", log_format="json")
    quiet = logging.getLogger("tests.quiet")
    quiet.setLevel(logging.WARNING)
    try:
        get_logger("tests.quiet").info("dropped")
        get_logger("tests.quiet").warning("kept")
        get_logger("tests.loud").info("also_kept")
    finally:
        quiet.setLevel(logging.NOTSET)
    records = json_lines(capsys.readouterr().out)
    assert [(r["event"], r["logger"]) for r in records] == [
        ("kept", "tests.quiet"),
        ("also_kept", "tests.loud"),
    ]


@pytest.mark.usefixtures("restore_logging")
def test_other_root_handlers_get_the_finished_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A handler added beside the app's own (an operator's, pytest's capture) still receives
    structlog's events, as records whose message is the rendered line, at its own level."""
    configure_logging(level="DEBUG", log_format="json")
    received: list[logging.LogRecord] = []

    class Collecting(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            received.append(record)

    extra = Collecting(level=logging.WARNING)
    logging.getLogger().addHandler(extra)
    get_logger("tests.logging").info("below_its_level")
    get_logger("tests.logging").warning("at_its_level", n=1)
    stdout = json_lines(capsys.readouterr().out)
    assert [r["event"] for r in stdout] == ["below_its_level", "at_its_level"]
    assert [(r.name, r.levelno) for r in received] == [("tests.logging", logging.WARNING)]
    assert json.loads(received[0].getMessage()) == stdout[1]


@pytest.mark.parametrize(
    "nanoseconds",
    [
        1_795_737_083_509_757_123,  # 2026-11-26T23:51:23.509757Z
        1_795_737_083_000_000_999,  # a zero fraction is left out, as isoformat does
        1_795_737_084_000_001_000,  # the next second: the cached prefix is renewed
        1_795_737_083_999_999_999,  # the clock stepped back: renewed again
        0,
    ],
)
def test_utc_timestamp_writes_what_timestamper_wrote(
    nanoseconds: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    stamp = UTCTimestamp()
    stamp(None, "info", {})  # a prefix cached for "now" first
    monkeypatch.setattr(f"{log_processors.__name__}.time.time_ns", lambda: nanoseconds)
    seconds, rest = divmod(nanoseconds, 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=rest // 1000)
    expected = moment.isoformat().replace("+00:00", "Z")  # structlog's TimeStamper(iso, utc)
    assert stamp(None, "info", {})["timestamp"] == expected
    assert stamp(None, "info", {})["timestamp"] == expected  # and from the cache
