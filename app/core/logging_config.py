"""One structlog pipeline for the whole process.

structlog events and records from stdlib loggers (uvicorn, SQLAlchemy, alembic, asyncio) run
through the same processors and the same renderer, so with LOG_FORMAT=json every line the
process writes is one JSON object, tracebacks included.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import logging.handlers
import sys
import time
from collections.abc import Mapping, MutableMapping
from typing import Any

import orjson
import structlog
from structlog.types import EventDict, Processor, WrappedLogger

REDACTED = "[REDACTED]"
# Substrings of keys whose values never reach a log line.
SENSITIVE_KEY_PARTS = ("authorization", "cookie", "password", "token", "secret", "api_key")


@functools.lru_cache(maxsize=4096)  # keys come from code and header names: a small set
def _is_sensitive(key: str) -> bool:
    lowered = key.lower().replace("-", "_")  # header spelling: X-Api-Key
    return any(part in lowered for part in SENSITIVE_KEY_PARTS)


_SCALARS = (str, int, float, bool, type(None))


def _redact_value(value: Any) -> Any:
    if isinstance(value, _SCALARS):  # most values of most lines: nothing to look into
        return value
    if isinstance(value, Mapping):
        return {
            k: REDACTED if _is_sensitive(str(k)) else _redact_value(v) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        if len(value) == 2 and isinstance(value[0], str | bytes) and _is_sensitive(_text(value[0])):
            return [value[0], REDACTED]  # a (name, value) header pair
        return [_redact_value(v) for v in value]
    return value


def _text(name: str | bytes) -> str:
    return name.decode("latin-1") if isinstance(name, bytes) else name


def redact_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # Values are replaced in place while iterating, which a dict allows (no key is added).
    for key, value in event_dict.items():
        if key == "event":
            continue
        if _is_sensitive(key):
            event_dict[key] = REDACTED
        elif not isinstance(value, _SCALARS):  # most values of most lines: nothing to look into
            event_dict[key] = _redact_value(value)
    return event_dict


def _orjson_dumps(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def _drop_color_message(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # uvicorn duplicates its message with ANSI colours in `color_message`.
    event_dict.pop("color_message", None)
    return event_dict


class UTCTimestamp:
    """`timestamp`: the time in UTC as ISO 8601, exactly as structlog's
    `TimeStamper(fmt="iso", utc=True)` writes it (2026-11-26T23:51:23.509757Z).

    TimeStamper builds a timezone-aware datetime and formats all of it on every line, about
    5 us per access-log line in a busy server; here the date and time of day are formatted
    once per second and only the microseconds per line.
    """

    def __init__(self) -> None:
        self._second: tuple[int, str] = (-1, "")

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        seconds, nanoseconds = divmod(time.time_ns(), 1_000_000_000)
        second, prefix = self._second  # one tuple, so threads never see half an update
        if second != seconds:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
            self._second = (seconds, prefix)
        microseconds = nanoseconds // 1000
        # datetime.isoformat leaves out a zero fraction; so does this.
        event_dict["timestamp"] = f"{prefix}.{microseconds:06d}Z" if microseconds else prefix + "Z"
        return event_dict


def shared_processors() -> list[Processor]:
    """Run for every line, structlog's own events and stdlib records alike."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        UTCTimestamp(),
        redact_secrets,
    ]


def foreign_processors() -> list[Processor]:
    """For stdlib records only: what structlog's own events never carry."""
    return [structlog.stdlib.ExtraAdder(), _drop_color_message, *shared_processors()]


def _console_traceback() -> structlog.typing.ExceptionRenderer:
    # rich (a dev tool) is optional; never its local variables: a request's scope holds its
    # Authorization header.
    if importlib.util.find_spec("rich") is None:
        return structlog.dev.plain_traceback
    return structlog.dev.RichTracebackFormatter(show_locals=False)


PRERENDERED = "_conduit_prerendered"  # LogRecord attribute: the message is the finished line


class LineFormatter(structlog.stdlib.ProcessorFormatter):
    """Renders stdlib records through structlog; passes structlog's own, already rendered
    lines through untouched (ProcessorFormatter would copy the record and run its chain again)."""

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, PRERENDERED, False):
            return record.getMessage()
        return super().format(record)


class LineStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stdout handler: stdlib records go through `emit` as usual; structlog's finished
    lines are written by `write_line`, under the same lock, without a LogRecord."""

    def write_line(self, line: str, name: str, levelno: int) -> None:
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            try:
                self.stream.write(line + self.terminator)
                self.flush()
            except Exception:
                self.handleError(_prerendered_record(name, levelno, line))


def _prerendered_record(name: str, levelno: int, line: str) -> logging.LogRecord:
    record = logging.LogRecord(name, levelno, "", 0, line, None, None)
    setattr(record, PRERENDERED, True)
    return record


def write_line(name: str, levelno: int, line: str) -> None:
    """A finished line to every sink `configure_logging` installed (the root's handlers) whose
    level lets it through: the stdout handler writes it as it is, the others (rotating files,
    pytest's capture) get a LogRecord carrying it, which `LineFormatter` passes through."""
    record = None
    for handler in logging.root.handlers:
        if levelno < handler.level:
            continue
        if isinstance(handler, LineStreamHandler):
            handler.write_line(line, name, levelno)
            continue
        if record is None:
            record = _prerendered_record(name, levelno, line)
        handler.handle(record)


class LineWriter:
    """The logger structlog wraps: it receives the line the processor chain finished.

    structlog's stdlib integration would hand each line to a stdlib Logger, which builds a
    LogRecord and runs it through the logger's and the handler's machinery and a Formatter,
    only to print the string it was given: 13 us a line in a busy server, a third of what the
    access-log line cost per request. Levels are still the stdlib loggers' (`filter_by_level`
    reads `disabled` and `getEffectiveLevel`), so LOG_LEVEL and per-logger levels apply as
    before.
    """

    def __init__(self, name: str | None = None) -> None:
        self.name = name or "root"
        self._stdlib = logging.getLogger(name)

    @property
    def disabled(self) -> bool:
        return self._stdlib.disabled

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802  # the stdlib's spelling
        return self._stdlib.isEnabledFor(level)

    def getEffectiveLevel(self) -> int:  # noqa: N802
        return self._stdlib.getEffectiveLevel()

    def debug(self, line: str) -> None:
        write_line(self.name, logging.DEBUG, line)

    def info(self, line: str) -> None:
        write_line(self.name, logging.INFO, line)

    def warning(self, line: str) -> None:
        write_line(self.name, logging.WARNING, line)

    def error(self, line: str) -> None:
        write_line(self.name, logging.ERROR, line)

    def critical(self, line: str) -> None:
        write_line(self.name, logging.CRITICAL, line)

    warn = warning
    exception = error
    fatal = critical
    msg = info


# Tracebacks as data, without the frames' local variables: structlog shows them by default, and
# they are rendered after `redact_secrets` ran, so a password argument or a request's scope
# (its Authorization header) would reach the log as it was.
_json_tracebacks = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
)


def _json_renderer() -> Processor:
    return structlog.processors.JSONRenderer(serializer=_orjson_dumps)


def _console_renderer() -> Processor:
    # No local variables in tracebacks: a request's scope holds its Authorization header.
    return structlog.dev.ConsoleRenderer(
        colors=sys.stderr.isatty(), exception_formatter=_console_traceback()
    )


def build_formatter(log_format: str) -> structlog.stdlib.ProcessorFormatter:
    """The formatter for stdlib records (uvicorn, SQLAlchemy, asyncio): structlog's shared
    processors, then the same renderer as structlog's own events."""
    renderer: Processor
    final: list[Processor]
    if log_format == "json":
        renderer = _json_renderer()
        final = [_json_tracebacks]
    else:
        renderer = _console_renderer()
        final = []
    return LineFormatter(
        foreign_pre_chain=foreign_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *final,
            renderer,
        ],
    )


def _rotating_handler(
    path: str, level: int, max_bytes: int, backups: int, formatter: logging.Formatter
) -> logging.Handler:
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
    )
    handler.setLevel(level)
    handler.setFormatter(formatter)
    return handler


def configure_logging(
    *,
    level: str = "INFO",
    log_format: str = "json",
    log_file: str | None = None,
    error_file: str | None = None,
    max_bytes: int = 10 * 1024 * 1024,
    backups: int = 5,
) -> None:
    """(Re)configure logging for the process; safe to call more than once."""
    formatter = build_formatter(log_format)
    stream = LineStreamHandler(sys.stdout)
    stream.setFormatter(formatter)
    handlers: list[logging.Handler] = [stream]
    if log_file:
        handlers.append(_rotating_handler(log_file, logging.DEBUG, max_bytes, backups, formatter))
    if error_file:
        handlers.append(_rotating_handler(error_file, logging.ERROR, max_bytes, backups, formatter))

    # Fields no line of ours prints; the logging HOWTO's "Optimization" switches, which spare
    # every record a walk up the stack (findCaller) and the thread/process lookups.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False

    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)

    # uvicorn installs its own handlers before importing the app: route them to the root.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.asgi", "sqlalchemy", "alembic"):
        named = logging.getLogger(name)
        named.handlers.clear()
        named.propagate = True
        # uvicorn's own config pins levels on these; LOG_LEVEL is the one that counts.
        named.setLevel(logging.NOTSET)
    # SQLAlchemy logs every statement at INFO; it speaks up from WARNING (DB_ECHO opts in).
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    # request_completed replaces uvicorn's access log.
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    access.disabled = True

    # Loggers cached on first use keep a reference to the processor list: update that list in
    # place so a reconfiguration (and structlog.testing.capture_logs) reaches them too.
    processors = structlog.get_config()["processors"]
    # The chain ends in the renderer in both formats, so a cached logger's LineWriter is
    # right whichever format a later reconfiguration picks.
    processors[:] = [
        # First: an event below the level is dropped before any work is done on it.
        structlog.stdlib.filter_by_level,
        *shared_processors(),
        structlog.processors.StackInfoRenderer(),
        *([_json_tracebacks, _json_renderer()] if log_format == "json" else [_console_renderer()]),
    ]
    structlog.configure(
        processors=processors,
        logger_factory=LineWriter,
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def uvicorn_log_config(log_format: str = "json", level: str = "INFO") -> MutableMapping[str, Any]:
    """A dictConfig for `uvicorn --log-config` so the supervisor process logs JSON too."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structlog": {
                "()": "app.core.logging_config.build_formatter",
                "log_format": log_format,
            }
        },
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "structlog",
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"handlers": ["default"], "level": level},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": False, "level": "CRITICAL"},
        },
    }


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)
