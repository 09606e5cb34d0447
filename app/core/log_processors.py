"""structlog processors of our own: secrets redacted, the timestamp, uvicorn's duplicate.

They run in the one chain `app.core.logging_config` builds, for structlog's events and stdlib
records alike (`_drop_color_message` for stdlib records only).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from typing import Any

from structlog.types import EventDict, WrappedLogger

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


def drop_color_message(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
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
