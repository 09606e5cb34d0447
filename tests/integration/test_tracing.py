"""OpenTelemetry traces, exported for real: a uvicorn process sends OTLP/HTTP to a receiver this
test starts, which decodes the protobuf with opentelemetry-proto, as a collector would.

Checked: the span tree of `GET /api/articles` (the server span, then SQL and Redis children),
an incoming W3C `traceparent` continued, the trace ids in every JSON log line of the request,
exemplars in the OpenMetrics exposition, the sampler settings, and that nothing of it exists
with tracing off.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.core.config import Settings
from app.db.redis_pipeline import PipelinedRedis
from app.main import build_resources, create_app
from app.middleware.request_context import RequestContextMiddleware
from devstack.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.apps import serve
from tests.support.live import LiveServer

SERVER, CLIENT = 2, 3  # opentelemetry.proto.trace.v1.Span.SpanKind
METRICS_TOKEN = "metrics-token-for-tracing-tests"
HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def traced_app(base_env: dict[str, str], receiver: OtlpReceiver) -> Iterator[LiveServer]:
    env = {
        **base_env,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_SERVICE_NAME": "conduit-api-under-test",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # the SDK's export interval (ms): tests wait less
        "LOG_FORMAT": "json",
        "METRICS_TOKEN": METRICS_TOKEN,
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # exemplars need single-process metrics
    with LiveServer(env) as server:
        yield server


def _request_spans(spans: list[ReceivedSpan], trace_id: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.trace_id == trace_id]


def _server_span(spans: list[ReceivedSpan], name: str) -> ReceivedSpan | None:
    return next((s for s in spans if s.kind == SERVER and s.name == name), None)


def _descends_from(span: ReceivedSpan, root: ReceivedSpan, spans: list[ReceivedSpan]) -> bool:
    by_id = {s.span_id: s for s in spans}
    parent = span.parent_span_id
    while parent:
        if parent == root.span_id:
            return True
        parent = by_id[parent].parent_span_id if parent in by_id else ""
    return False


def test_list_articles_span_tree_and_log_lines(
    traced_app: LiveServer, receiver: OtlpReceiver
) -> None:
    incoming_trace = secrets.token_hex(16)
    caller_span = secrets.token_hex(8)
    response = httpx.get(
        f"{traced_app.url}/api/articles?limit=5&tag={secrets.token_hex(4)}",  # a cache miss
        headers={"traceparent": f"00-{incoming_trace}-{caller_span}-01"},
    )
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]

    def complete(spans: list[ReceivedSpan]) -> bool:
        mine = _request_spans(spans, incoming_trace)
        return _server_span(mine, "GET /api/articles") is not None and len(mine) >= 3

    spans = _request_spans(receiver.wait_for(complete), incoming_trace)
    server = _server_span(spans, "GET /api/articles")
    assert server is not None
    # The caller's traceparent was continued: same trace, the caller's span as parent.
    assert server.parent_span_id == caller_span
    assert server.service == "conduit-api-under-test"
    assert server.attributes.get("http.route") == "/api/articles"

    children = [s for s in spans if s is not server]
    sql = [s for s in children if s.attributes.get("db.system") == "postgresql"]
    redis = [s for s in children if s.attributes.get("db.system.name") == "redis"]
    assert sql, f"no SQL span among {[s.name for s in children]}"
    assert redis, f"no Redis span among {[s.name for s in children]}"
    assert any(s.name == "SELECT" for s in sql)
    assert {s.name for s in redis} & {"EVALSHA", "GET", "SET"}
    for span in sql + redis:
        assert span.kind == CLIENT
        assert _descends_from(span, server, spans), span
        assert server.start_ns <= span.start_ns <= span.end_ns <= server.end_ns
    statement = next(s for s in sql if s.name == "SELECT")
    assert "articles" in str(statement.attributes.get("db.statement", ""))
    # Keys and arguments stay out of Redis spans: they hold usernames and client addresses.
    assert not any("ratelimit" in str(v) for s in redis for v in s.attributes.values())

    traced_app.wait_for_line(
        lambda line: line.get("request_id") == request_id and line["event"] == "request_completed"
    )
    lines = [line for line in traced_app.json_lines() if line.get("request_id") == request_id]
    for line in lines:
        assert line["trace_id"] == incoming_trace, line
        assert HEX16.match(line["span_id"]), line
        assert line["trace_sampled"] is True


def test_a_request_without_traceparent_starts_a_trace(
    traced_app: LiveServer, receiver: OtlpReceiver
) -> None:
    response = httpx.get(f"{traced_app.url}/api/tags")
    request_id = response.headers["x-request-id"]
    completed = traced_app.wait_for_line(
        lambda line: line.get("request_id") == request_id and line["event"] == "request_completed"
    )
    trace_id = completed["trace_id"]
    assert HEX32.match(trace_id)
    spans = receiver.wait_for(
        lambda s: _server_span(_request_spans(s, trace_id), "GET /api/tags") is not None
    )
    server = _server_span(_request_spans(spans, trace_id), "GET /api/tags")
    assert server is not None
    assert server.parent_span_id == ""


def test_exemplars_carry_trace_ids_in_openmetrics(traced_app: LiveServer) -> None:
    httpx.get(f"{traced_app.url}/api/tags")
    auth = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    openmetrics = httpx.get(
        f"{traced_app.url}/health/metrics",
        headers={**auth, "Accept": "application/openmetrics-text; version=1.0.0"},
    )
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    exemplars = re.findall(
        r'^http_request_duration_seconds_bucket\{[^}]*route="/api/tags"[^}]*\} \S+ '
        r'# \{trace_id="([0-9a-f]{32})"\}',
        openmetrics.text,
        re.MULTILINE,
    )
    assert exemplars, "no exemplar on the latency histogram"
    plain = httpx.get(f"{traced_app.url}/health/metrics", headers=auth)
    assert plain.headers["content-type"].startswith("text/plain")
    assert "trace_id" not in plain.text


def test_health_probes_are_not_traced(traced_app: LiveServer, receiver: OtlpReceiver) -> None:
    for path in ("/health", "/health/liveness", "/health/readiness"):
        assert httpx.get(traced_app.url + path).status_code == 200
    httpx.get(f"{traced_app.url}/api/tags")  # a traced request after them, to wait for
    receiver.wait_for(lambda s: sum(x.name == "GET /api/tags" for x in s) >= 3)
    spans = receiver.spans()
    assert not [s for s in spans if s.kind == SERVER and "/health" in s.name]
    # Their SQL (readiness pings the database), and start-up's, start no trace of their own.
    assert all(s.kind == SERVER for s in spans if not s.parent_span_id), [
        (s.kind, s.name) for s in spans if not s.parent_span_id
    ]


SettingsFactory = Callable[..., Settings]


async def test_ratio_sampler_zero_exports_nothing(
    settings_factory: SettingsFactory, tmp_path: Path
) -> None:
    with OtlpReceiver() as quiet:
        settings = settings_factory(
            OTEL_EXPORTER_OTLP_ENDPOINT=quiet.url,
            OTEL_TRACES_SAMPLER="parentbased_traceidratio",
            OTEL_TRACES_SAMPLER_ARG=0.0,
        )
        async with serve(settings) as http:
            for _ in range(5):
                assert (await http.get("/api/tags")).status_code == 200
        # The lifespan flushed the exporter on the way out: anything sampled has arrived.
        assert quiet.spans() == []


async def test_tracing_off_adds_nothing(settings_factory: SettingsFactory) -> None:
    app: FastAPI = create_app(settings_factory())
    assert app.state.tracing is None
    [context] = [m for m in app.user_middleware if m.cls is RequestContextMiddleware]  # type: ignore[comparison-overlap]
    assert context.kwargs["spans"] is None
    async with serve(settings_factory()) as http:
        response = await http.get("/api/tags")
        assert "traceparent" not in response.headers
    plain = create_app(settings_factory())
    resources = build_resources(plain.state.settings, plain.state.metrics)
    try:
        assert type(resources.redis.pipeline) is PipelinedRedis
    finally:
        await resources.redis.close()
        await resources.engine.dispose()


def test_unknown_sampler_and_grpc_are_refused(settings_factory: SettingsFactory) -> None:
    with pytest.raises(ValueError, match="OTEL_TRACES_SAMPLER"):
        settings_factory(OTEL_TRACES_SAMPLER="sometimes")
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        settings_factory(OTEL_EXPORTER_OTLP_PROTOCOL="grpc")
    with pytest.raises(ValueError, match="OTEL_TRACES_SAMPLER_ARG"):
        settings_factory(OTEL_TRACES_SAMPLER_ARG=1.5)
