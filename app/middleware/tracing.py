"""The request's server span: OpenTelemetry's ASGI middleware, named after the route template.

The ASGI middleware starts the span (continuing an incoming W3C `traceparent`) before routing, so
it can only know the method; the span is renamed "GET /api/articles/{slug}" and given
`http.route` once the inner app has routed the request. Named by the raw path instead, every
slug would be a span name of its own. Added only when tracing is on (see create_app).
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import TracerProvider
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.middleware.request_context import UNMATCHED_ROUTE, route_template

# Balancer and kubelet probes and Prometheus' scrapes, every few seconds: never traced.
UNTRACED_PATHS = r"^https?://[^/]+/health(/[a-z]+)?/?$"


def _method_only(scope: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return str(scope.get("method", "HTTP")), {}


class RouteNamedSpanMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        # At the response's start, not after the app returns: the ASGI middleware ends the span
        # as the last body chunk goes out. Routing is done by then.
        async def send_naming_span(message: Message) -> None:
            if message["type"] == "http.response.start":
                span = trace.get_current_span()
                if span.is_recording():
                    template = route_template(scope)
                    span.update_name(f"{scope['method']} {template}")
                    if template != UNMATCHED_ROUTE:
                        span.set_attribute("http.route", template)
            await send(message)

        await self.app(scope, receive, send_naming_span)


def server_span_middleware(app: ASGIApp, tracer_provider: TracerProvider) -> ASGIApp:
    """The server span around `app`; the ASGI instrumentation's per-message receive/send spans
    and its own metrics are left out (the app's Prometheus metrics already count requests)."""
    return OpenTelemetryMiddleware(
        RouteNamedSpanMiddleware(app),
        excluded_urls=UNTRACED_PATHS,
        default_span_details=_method_only,
        tracer_provider=tracer_provider,
        meter_provider=NoOpMeterProvider(),
        exclude_spans=["receive", "send"],
    )
