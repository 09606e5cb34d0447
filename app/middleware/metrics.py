"""HTTP metrics: count, latency histogram and in-flight gauge, labelled by route template.

The labelled children are looked up once per (method, route, status) and kept: prometheus
`labels()` takes a lock and builds a key on every call. Route templates bound the label sets,
so the cache stays small.

With tracing on (`exemplars`), a latency observed inside a sampled trace carries its trace id
as an exemplar, shown when the scrape asks for OpenMetrics. prometheus_client keeps exemplars
only in single-process mode (one worker per container, as the Kubernetes manifests run it).
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.middleware.request_context import route_template
from app.observability.metrics import AppMetrics
from app.observability.trace_context import sampled_trace_exemplar


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: AppMetrics, exemplars: bool = False) -> None:
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._exemplars = exemplars

    def _record(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.metrics.http_requests.labels(method, route, str(status)),
                self.metrics.http_duration.labels(method, route, str(status)),
            )
            self._children[key] = children
        children[0].inc()
        if self._exemplars:
            children[1].observe(seconds, sampled_trace_exemplar())
        else:
            children[1].observe(seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_capturing_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        in_flight = self.metrics.http_in_flight
        in_flight.inc()
        try:
            await self.app(scope, receive, send_capturing_status)
        finally:
            in_flight.dec()
            elapsed = time.perf_counter() - started
            self._record(scope["method"], route_template(scope), status, elapsed)
