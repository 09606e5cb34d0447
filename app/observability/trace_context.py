"""What the rest of the app reads from the current trace: ids for log lines and exemplars.

Only the OpenTelemetry API here (no SDK): these run per log line or per request, and are wired in
only when tracing is on (`Settings.tracing_enabled`), so with tracing off nothing calls them.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from opentelemetry import trace


def add_trace_ids(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the current span's ids, in the W3C forms (32 and 16 hex digits) a
    trace backend searches by. `trace_sampled` says whether the trace was recorded: with a
    ratio sampler most requests carry ids (for joining log lines) but have no stored trace."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = format(context.trace_id, "032x")
        event_dict["span_id"] = format(context.span_id, "016x")
        event_dict["trace_sampled"] = context.trace_flags.sampled
    return event_dict


def sampled_trace_exemplar() -> dict[str, str] | None:
    """The exemplar labels for a metric observed inside a sampled trace, else None (an exemplar
    must point at a trace that exists)."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid and context.trace_flags.sampled:
        return {"trace_id": format(context.trace_id, "032x")}
    return None
