"""One structlog pipeline for the whole process.

structlog events and records from stdlib loggers (uvicorn, SQLAlchemy, alembic, asyncio) run
through the same processors and the same renderer, so with LOG_FORMAT=json every line the
process writes is one JSON object, tracebacks included.
"""

from __future__ import annotations

import importlib.util
import logging
import logging.handlers
import sys
from collections.abc import MutableMapping, Sequence
from typing import Any

import orjson
import structlog
from structlog.types import Processor

from app.core.log_processors import UTCTimestamp, drop_color_message, redact_secrets
from app.core.log_sinks import LineFormatter, LineStreamHandler, LineWriter


def _orjson_dumps(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def shared_processors(context: Sequence[Processor] = ()) -> list[Processor]:
    """Run for every line, structlog's own events and stdlib records alike. `context` adds
    fields from elsewhere (the trace ids, when tracing is on)."""
    return [
        structlog.contextvars.merge_contextvars,
        *context,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        UTCTimestamp(),
        redact_secrets,
    ]


def foreign_processors(context: Sequence[Processor] = ()) -> list[Processor]:
    """For stdlib records only: what structlog's own events never carry."""
    return [structlog.stdlib.ExtraAdder(), drop_color_message, *shared_processors(context)]


def _console_traceback() -> structlog.typing.ExceptionRenderer:
    # rich (a dev tool) is optional; never its local variables: a request's scope holds its
    # Authorization header.
    if importlib.util.find_spec("rich") is None:
        return structlog.dev.plain_traceback
    return structlog.dev.RichTracebackFormatter(show_locals=False)


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


def build_formatter(
    log_format: str, context: Sequence[Processor] = ()
) -> structlog.stdlib.ProcessorFormatter:
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
        foreign_pre_chain=foreign_processors(context),
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
    context: Sequence[Processor] = (),
) -> None:
    """(Re)configure logging for the process; safe to call more than once. `context`: processors
    adding fields to every line, after the bound context variables."""
    formatter = build_formatter(log_format, context)
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
        *shared_processors(context),
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
