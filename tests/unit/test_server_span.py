"""The hand-written server span (app.middleware.tracing, run by RequestContextMiddleware): what a
sampled request records, what an unsampled one skips, and that an incoming traceparent is
continued."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, get_current_span

from app.middleware.request_context import RequestContextMiddleware
from app.middleware.tracing import ServerSpans
from app.observability.tracing import sampler_for

seen: dict[str, Any] = {}


def _app(ratio: float) -> tuple[FastAPI, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler_for("parentbased_traceidratio", ratio))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = FastAPI()

    @app.get("/items/{item}")
    async def item(item: str) -> dict[str, str]:
        seen["instrumentation"] = is_instrumentation_enabled()
        seen["trace_id"] = get_current_span().get_span_context().trace_id
        if item == "boom":
            raise RuntimeError("boom")
        return {"item": item}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {}

    app.add_middleware(RequestContextMiddleware, spans=ServerSpans(provider))
    return app, exporter


def _client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://api.test")


async def test_sampled_request_span() -> None:
    app, exporter = _app(1.0)
    async with _client(app) as http:
        await http.get("/items/one?x=1", headers={"user-agent": "probe/1"})
    [span] = exporter.get_finished_spans()
    assert span.name == "GET /items/{item}"
    assert span.kind is SpanKind.SERVER
    attributes = dict(span.attributes or {})
    assert attributes["http.route"] == "/items/{item}"
    assert attributes["http.response.status_code"] == 200
    assert attributes["url.path"] == "/items/one"
    assert attributes["url.query"] == "x=1"
    assert attributes["user_agent.original"] == "probe/1"
    assert seen["instrumentation"] is True


async def test_incoming_traceparent_is_continued() -> None:
    app, exporter = _app(0.0)  # parent-based: the caller's "sampled" flag wins over the ratio
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with _client(app) as http:
        await http.get("/items/two", headers={"traceparent": f"00-{trace_id}-{parent}-01"})
    [span] = exporter.get_finished_spans()
    assert format(span.context.trace_id, "032x") == trace_id
    assert span.parent is not None
    assert format(span.parent.span_id, "016x") == parent


async def test_unsampled_request_records_nothing_and_suppresses_instrumentation() -> None:
    app, exporter = _app(0.0)
    async with _client(app) as http:
        assert (await http.get("/items/three")).status_code == 200
    assert exporter.get_finished_spans() == ()
    assert seen["instrumentation"] is False, "SQL and Redis spans are skipped, not just dropped"
    assert seen["trace_id"] == 0, "no caller's trace, no span: no trace id naming nothing"


async def test_unsampled_continued_request_keeps_the_callers_trace_id() -> None:
    app, exporter = _app(1.0)  # parent-based: the caller's "not sampled" flag wins
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with _client(app) as http:
        headers = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-00"}
        assert (await http.get("/items/four", headers=headers)).status_code == 200
    assert exporter.get_finished_spans() == ()
    assert seen["instrumentation"] is False
    assert format(seen["trace_id"], "032x") == trace_id, "log lines join the caller's"


async def test_new_requests_are_sampled_at_the_configured_ratio_once() -> None:
    """The decision taken before the span (`samples_new_root`) is not taken again by the SDK:
    at 50 %, 400 requests give ~200 traces (drawing twice would give ~100)."""
    app, exporter = _app(0.5)
    async with _client(app) as http:
        for _ in range(400):
            await http.get("/items/five")
    traced = len(exporter.get_finished_spans())
    assert 140 <= traced <= 260, traced  # binomial(400, 0.5): 6 standard deviations either side


async def test_exception_marks_the_span_as_an_error() -> None:
    app, exporter = _app(1.0)
    async with _client(app) as http:
        assert (await http.get("/items/boom")).status_code == 500
    [span] = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert any(event.name == "exception" for event in span.events)


async def test_probes_are_not_traced() -> None:
    app, exporter = _app(1.0)
    async with _client(app) as http:
        await http.get("/health")
    assert exporter.get_finished_spans() == ()
