"""OpenTelemetry tracing: spans for each request, its SQL and its Redis commands, exported over
OTLP/HTTP (protobuf) to a collector.

Off by default and free when off: nothing here is imported, no middleware or log processor is
added and no driver is patched unless OTEL_EXPORTER_OTLP_ENDPOINT (or the traces-only endpoint)
is set (see `Settings.tracing_enabled`). The standard variables are honoured through Settings:
OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG; the exporter itself still
reads OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT and _COMPRESSION, and Resource.create reads
OTEL_RESOURCE_ATTRIBUTES. Incoming W3C `traceparent` headers are honoured by the ASGI middleware
(the global propagator, W3C trace context by default).

Where the spans come from:
- the request: `app.middleware.tracing`, on the OpenTelemetry API (the ASGI instrumentation
  library cost 46 % more CPU per cached read at 1 % sampling: measured, see there);
- SQL: opentelemetry-instrumentation-asyncpg, which wraps asyncpg's Connection and
  PreparedStatement methods, so it sees both the ORM's statements (SQLAlchemy runs them as
  prepared statements) and the hot reads `app.repositories.driver` sends on the raw connection;
- Redis: `app.db.redis_tracing`, around the hand-written pipelined connection that no library
  instruments.

The provider is not installed globally (tests build many apps in one process): it is handed to
each instrumentation. The batch processor's thread starts in the lifespan, after uvicorn forked
the worker, and is flushed at shutdown.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from opentelemetry.context import Context, create_key
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, Tracer, get_current_span
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from app.core.config import Settings
from app.core.logging_config import get_logger

log = get_logger(__name__)

FLUSH_TIMEOUT_MILLIS = 5_000


# Set in the context a request's server span starts from once `samples_new_root` has said yes,
# so the decision is made once: `should_sample` would otherwise draw again (1 % of 1 %).
SAMPLED_ROOT_KEY = create_key("conduit-sampled-root")
SAMPLED_ROOT = Context({SAMPLED_ROOT_KEY: True})


class RequestTracesOnly(Sampler):
    """Traces start at a request: a span with no parent that is not a server span (the SQL of
    start-up, of readiness probes, which are not traced, and of pool pings) is dropped instead
    of becoming a trace of its own. Everything else is `delegate`'s decision."""

    def __init__(self, delegate: Sampler, root: Sampler) -> None:
        self.delegate = delegate
        self.root = root  # what `delegate` decides by for a span with no parent

    def samples_new_root(self) -> bool:
        """The decision for a request that arrived with no trace, taken before any span exists
        (app.middleware.tracing: an unsampled one then builds none), on a fresh random trace id
        as the SDK draws them (trace ids are not secrets: `random`, like the SDK)."""
        trace_id = random.getrandbits(128)  # nosec B311 # trace ids are not secrets
        decision = self.root.should_sample(None, trace_id, "", SpanKind.SERVER).decision
        return decision is Decision.RECORD_AND_SAMPLE

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if parent_context is not None and parent_context.get(SAMPLED_ROOT_KEY):
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)
        parent = get_current_span(parent_context).get_span_context()
        if not parent.is_valid and kind is not SpanKind.SERVER:
            return SamplingResult(Decision.DROP)
        return self.delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"RequestTracesOnly{{{self.delegate.get_description()}}}"


def sampler_for(name: str, argument: float | None) -> Sampler:
    """OTEL_TRACES_SAMPLER's values, as the SDK reads them from the environment."""
    ratio = 1.0 if argument is None else argument
    roots: dict[str, Sampler] = {
        "always_on": ALWAYS_ON,
        "always_off": ALWAYS_OFF,
        "traceidratio": TraceIdRatioBased(ratio),
    }
    root = roots[name.removeprefix("parentbased_")]
    delegate = ParentBased(root) if name.startswith("parentbased_") else root
    return RequestTracesOnly(delegate, root)


class Tracing:
    def __init__(self, settings: Settings) -> None:
        endpoint = settings.otlp_traces_endpoint
        if endpoint is None:
            raise ValueError("tracing needs OTEL_EXPORTER_OTLP_ENDPOINT")
        self.endpoint = endpoint
        self.sampler = settings.OTEL_TRACES_SAMPLER
        self.provider = TracerProvider(
            sampler=sampler_for(settings.OTEL_TRACES_SAMPLER, settings.OTEL_TRACES_SAMPLER_ARG),
            resource=Resource.create(
                {
                    "service.name": settings.OTEL_SERVICE_NAME,
                    "service.version": settings.APP_VERSION,
                    "deployment.environment.name": settings.APP_ENV,
                }
            ),
            shutdown_on_exit=False,  # the lifespan flushes it
        )
        self._sql = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]

    def tracer(self, name: str) -> Tracer:
        return self.provider.get_tracer(name)

    def start(self) -> None:
        """In the worker, after the fork: the export thread, and the SQL instrumentation."""
        self.provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=self.endpoint))
        )
        self._sql.instrument(tracer_provider=self.provider)
        log.info("tracing_started", endpoint=self.endpoint, sampler=self.sampler)

    def stop(self) -> None:
        """Blocking (flushes the last spans, bounded): call it through asyncio.to_thread."""
        if self._sql.is_instrumented_by_opentelemetry:
            self._sql.uninstrument()
        self.provider.force_flush(FLUSH_TIMEOUT_MILLIS)
        self.provider.shutdown()
