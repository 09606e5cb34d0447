"""The request's server span, continuing an incoming W3C `traceparent`.

Hand-written on the OpenTelemetry API rather than opentelemetry-instrumentation-asgi or
FastAPI's own telemetry, because of a measurement (docs/performance.md, "Tracing"): both build
every request's attributes, URL and metric labels before the sampler has spoken (+30 to
+45 us per unsampled request against ~11 here), and neither spares an unsampled request its SQL
and Redis instrumentation. Here the sampler decides first:

- a sampled request gets a recording span with the HTTP semantic-convention attributes, named
  "GET /api/articles/{slug}" once routing is known (by the raw path, every slug would be a
  span name of its own), its status, and the exception if one escapes;
- an unsampled one runs in a context that suppresses instrumentation, so its SQL and Redis
  commands skip the instrumentations' work entirely. If the caller sent a `traceparent`, it
  also gets the SDK's non-recording span, so its log lines carry the caller's trace id (marked
  `trace_sampled: false`) to join them to the caller's logs. If not, nothing is built: for a
  new request the sampler is asked first, with no span in hand (`samples_new_root`), and only
  a yes goes on to the SDK, which then records without drawing again.

It is not a middleware of its own: `RequestContextMiddleware` calls it, because one more layer
in the middleware chain cost more than the span itself (every await resumes every layer). What
the library guarantees is kept: extraction through the globally configured propagator (W3C
trace context and baggage by default, OTEL_PROPAGATORS honoured), the span always ended, and
the context always detached. Health probes and Prometheus' scrapes are never traced.
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

# The key the instrumentations check (`is_instrumentation_enabled`). Set in the request's own
# context instead of through `suppress_instrumentation()`, a second attach per request.
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode
from starlette.types import Scope

from app.middleware.request_context import UNMATCHED_ROUTE, route_template
from app.observability.tracing import SAMPLED_ROOT, RequestTracesOnly

UNTRACED_PATHS = frozenset(
    {"/health", "/health/liveness", "/health/readiness", "/health/metrics", "/health/detailed"}
)
# The headers a propagator may read; only these are handed to it (the others are never copied).
PROPAGATION_HEADERS = frozenset({b"traceparent", b"tracestate", b"baggage"})


@dataclass(frozen=True, slots=True)
class ServerSpan:
    span: Span
    token: object  # the context token, detached when the request ends
    recording: bool

    def response_started(self, scope: Scope, status: int) -> None:
        """Routing is done and the status known: name the span and record them."""
        if not self.recording:
            return
        span = self.span
        template = route_template(scope)
        span.update_name(f"{scope['method']} {template}")
        if template != UNMATCHED_ROUTE:
            span.set_attribute("http.route", template)
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))

    def failed(self, exc: BaseException) -> None:
        if self.recording:
            self.span.record_exception(exc)
            self.span.set_status(Status(StatusCode.ERROR, type(exc).__name__))

    def end(self) -> None:
        otel_context.detach(self.token)  # type: ignore[arg-type]
        self.span.end()


def _incoming_context(scope: Scope) -> otel_context.Context | None:
    carrier: dict[str, str] | None = None
    for name, value in scope["headers"]:
        if name in PROPAGATION_HEADERS:
            carrier = carrier or {}
            carrier[name.decode("latin-1")] = value.decode("latin-1")
    return propagate.extract(carrier) if carrier else None


def _request_attributes(scope: Scope) -> dict[str, str | int]:
    attributes: dict[str, str | int] = {
        "http.request.method": scope["method"],
        "url.scheme": scope.get("scheme", "http"),
        "url.path": scope["path"],
        "network.protocol.version": scope.get("http_version", "1.1"),
    }
    if scope.get("query_string"):
        attributes["url.query"] = scope["query_string"].decode("latin-1")
    if client := scope.get("client"):
        attributes["client.address"] = client[0]
    for name, value in scope["headers"]:
        if name == b"user-agent":
            attributes["user_agent.original"] = value.decode("latin-1")
        elif name == b"host":
            attributes["server.address"] = value.decode("latin-1").rsplit(":", 1)[0]
    return attributes


class ServerSpans:
    def __init__(self, tracer_provider: SDKTracerProvider) -> None:
        self.tracer = tracer_provider.get_tracer(__name__)
        sampler = tracer_provider.sampler
        self._roots = sampler if isinstance(sampler, RequestTracesOnly) else None

    def start(self, scope: Scope) -> ServerSpan | None:
        """The request's span, made current; None for an untraced path."""
        if scope["path"] in UNTRACED_PATHS:
            return None
        incoming = _incoming_context(scope)
        start_from = incoming
        if incoming is None and self._roots is not None:
            if not self._roots.samples_new_root():
                return self._untraced()
            start_from = SAMPLED_ROOT
        span = self.tracer.start_span(scope["method"], context=start_from, kind=SpanKind.SERVER)
        current = trace.set_span_in_context(span)
        recording = span.is_recording()
        if recording:
            span.set_attributes(_request_attributes(scope))
        else:
            current = otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True, current)
        return ServerSpan(span, otel_context.attach(current), recording)

    @staticmethod
    def _untraced() -> ServerSpan:
        """An unsampled request that no caller traced: no span at all, so no trace id in its log
        lines (it would name a trace that exists nowhere; `request_id` joins them), and its SQL
        and Redis commands skip the instrumentations. Building the SDK's non-recording span
        instead cost ~25 us per request in the full app (three times its cost in isolation)."""
        suppressed = otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True)
        return ServerSpan(INVALID_SPAN, otel_context.attach(suppressed), recording=False)
