"""What the server span costs per request, in isolation: `python -m bench.span_overhead`.

Calls `RequestContextMiddleware` directly around a trivial ASGI app (no network, no server),
without spans and then with `app.middleware.tracing.ServerSpans` on a real SDK tracer provider
for a sampler at 0 %, 1 % and 100 %, and prints the microseconds the span adds per request.
The wrapped app also does what the rest of the app does per request with tracing on (the log
line's trace ids, the exemplar lookup), so those are counted too. Spans are kept by no
processor: exporting is the batch processor thread's work, off the request path.
docs/performance.md ("Tracing") has the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from opentelemetry.sdk.trace import TracerProvider

from app.middleware.request_context import RequestContextMiddleware
from app.middleware.tracing import ServerSpans
from app.observability.trace_context import add_trace_ids, sampled_trace_exemplar
from app.observability.tracing import sampler_for

SCOPE: dict[str, Any] = {
    "type": "http",
    "method": "GET",
    "path": "/api/articles/some-slug",
    "scheme": "http",
    "http_version": "1.1",
    "client": ("127.0.0.1", 50000),
    "query_string": b"",
    "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"accept", b"*/*")],
}


async def _app(scope: Any, receive: Any, send: Any) -> None:
    add_trace_ids(None, "info", {"event": "request_completed"})
    sampled_trace_exemplar()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def _receive() -> dict[str, Any]:
    return {"type": "http.request"}


async def _send(_: Any) -> None:
    return None


async def _per_call_us(app: Any, calls: int) -> float:
    for _ in range(calls // 10):  # warm-up
        await app(dict(SCOPE), _receive, _send)
    started = time.perf_counter()
    for _ in range(calls):
        await app(dict(SCOPE), _receive, _send)
    return (time.perf_counter() - started) / calls * 1e6


async def main(calls: int) -> None:
    bare = await _per_call_us(RequestContextMiddleware(_app), calls)
    sys.stdout.write(f"request context without spans: {bare:.1f} us per request\n")
    for ratio in (0.0, 0.01, 1.0):
        provider = TracerProvider(sampler=sampler_for("parentbased_traceidratio", ratio))
        with_spans = RequestContextMiddleware(_app, spans=ServerSpans(provider))
        traced = await _per_call_us(with_spans, calls)
        sys.stdout.write(f"sampled {ratio:>4.0%}: +{traced - bare:.1f} us per request\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.span_overhead")
    parser.add_argument("--calls", type=int, default=50_000)
    asyncio.run(main(parser.parse_args().calls))
