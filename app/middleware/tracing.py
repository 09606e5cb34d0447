"""The request's server span, continuing an incoming W3C `traceparent`.

Hand-written on the OpenTelemetry API rather than opentelemetry-instrumentation-asgi, because
of a measurement (docs/performance.md, "Tracing"): that middleware builds every request's
attributes, URL and metric labels before the sampler has spoken, so at 1 % sampling a cached
article cost 46 % more CPU than with tracing off. Here the sampler decides first:

- a sampled request gets a recording span with the HTTP semantic-convention attributes, named
  "GET /api/articles/{slug}" once routing is known (by the raw path, every slug would be a
  span name of its own), its status, and the exception if one escapes;
- an unsampled one gets the non-recording span (so log lines still carry its trace id, marked
  `trace_sampled: false`) and a context that suppresses instrumentation, so its SQL and Redis
  commands skip the instrumentations' work entirely.

What the library guarantees is kept: extraction through the globally configured propagator
(W3C trace context and baggage by default, OTEL_PROPAGATORS honoured), the span always ended,
and the context always detached. Health probes and Prometheus' scrapes are never traced.
"""

from __future__ import annotations

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.middleware.request_context import UNMATCHED_ROUTE, route_template

UNTRACED_PATHS = frozenset(
    {"/health", "/health/liveness", "/health/readiness", "/health/metrics", "/health/detailed"}
)
# The headers a propagator may read; only these are handed to it (the others are never copied).
PROPAGATION_HEADERS = frozenset({b"traceparent", b"tracestate", b"baggage"})


def _incoming_context(scope: Scope) -> otel_context.Context | None:
    carrier = {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in scope["headers"]
        if name in PROPAGATION_HEADERS
    }
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


class ServerSpanMiddleware:
    def __init__(self, app: ASGIApp, tracer_provider: TracerProvider) -> None:
        self.app = app
        self.tracer = tracer_provider.get_tracer(__name__)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNTRACED_PATHS:
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        span = self.tracer.start_span(
            method, context=_incoming_context(scope), kind=SpanKind.SERVER
        )
        recording = span.is_recording()
        if recording:
            span.set_attributes(_request_attributes(scope))
        token = otel_context.attach(trace.set_span_in_context(span))

        async def send_recording_status(message: Message) -> None:
            # At the response's start: routing is done, and the status is known.
            if message["type"] == "http.response.start":
                template = route_template(scope)
                span.update_name(f"{method} {template}")
                if template != UNMATCHED_ROUTE:
                    span.set_attribute("http.route", template)
                status = message["status"]
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            await send(message)

        try:
            if recording:
                await self.app(scope, receive, send_recording_status)
            else:
                with suppress_instrumentation():
                    await self.app(scope, receive, send)
        except BaseException as exc:
            if recording:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            otel_context.detach(token)
            span.end()
