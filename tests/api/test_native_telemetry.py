"""FastAPI's own OpenTelemetry bridge stays off: the app's request spans are its own
(app.middleware.tracing, sampled first, instrumentation suppressed when not). With the bridge on,
a process-global tracer provider (set by an agent, `opentelemetry-instrument`, or the
OTEL_PYTHON_TRACER_PROVIDER variable) would give every request a second, unsampled-by-us server
span, and every request would pay the bridge's global-provider lookups."""

from __future__ import annotations

import pytest
from httpx import AsyncClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


async def test_a_global_tracer_provider_gets_no_spans_from_fastapi(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # What `trace.set_tracer_provider` does, undone after the test (the API allows one set
    # per process).
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)
    assert trace.get_tracer_provider() is provider

    response = await client.get("/api/tags")

    assert response.status_code == 200
    assert exporter.get_finished_spans() == ()
