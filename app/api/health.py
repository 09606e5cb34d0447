"""Health endpoints with Kubernetes semantics.

- /health, /health/liveness: the process serves; never touch a dependency (a DB blip must not
  turn into a restart storm).
- /health/readiness: Postgres answers (and Redis when required), each check bounded; 503 while
  draining on shutdown so balancers take the instance out before it stops.
- /health/detailed, /health/metrics: for operators and Prometheus, behind METRICS_TOKEN.
  Detailed health also reports the image storage; readiness never checks it (an outage of the
  store costs uploads only, and the API keeps serving everything else).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse

from app.api.deps import ResourcesDep, resources_of
from app.api.plain_route import PlainRequestRoute
from app.api.state import Resources
from app.core.error_handlers import UnauthorizedError, error_body
from app.core.logging_config import get_logger
from app.observability import system
from app.observability.checks import (
    CheckResult,
    check_database,
    check_redis,
    check_storage,
    database_pool,
)
from app.observability.worker_gauges import refresh_worker_gauges
from app.resilience.circuit_breaker import STATE_VALUES, BreakerState
from app.schemas.health import HealthStatus

# Two routers, because routes are matched in the order they were included: the probe that
# balancers call every few seconds goes before the API, the rest after it (see create_app).
probe_router = APIRouter(prefix="/health", tags=["health"])
router = APIRouter(prefix="/health", tags=["health"])

log = get_logger(__name__)

READINESS_RETRY_AFTER = "5"


async def require_metrics_token(
    resources: ResourcesDep, authorization: Annotated[str | None, Header()] = None
) -> None:
    token = resources.settings.METRICS_TOKEN
    if token is None:
        return
    expected = f"Bearer {token.get_secret_value()}".encode()
    if not authorization or not hmac.compare_digest(authorization.encode(), expected):
        error = UnauthorizedError(
            "A valid metrics token is required", code="metrics_token_required"
        )
        error.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'  # RFC 6750, not the API's
        raise error


OperatorOnly = Depends(require_metrics_token)


@functools.lru_cache(maxsize=8)
def _health_body(service: str, version: str) -> bytes:
    return HealthStatus(status="ok", service=service, version=version).model_dump_json().encode()


@functools.lru_cache(maxsize=8)
def _health_headers(body: bytes) -> tuple[tuple[bytes, bytes], ...]:
    return tuple(Response(content=body, media_type="application/json").raw_headers)


class _RenderedResponse(Response):
    """A 200 whose body and headers were rendered once (by Response itself, so the bytes are
    the same); each response gets its own header list, which middleware may change in place."""

    media_type = "application/json"

    def __init__(self, body: bytes, raw_headers: tuple[tuple[bytes, bytes], ...]) -> None:
        self.status_code = 200
        self.background = None
        self.body = body
        self.raw_headers = list(raw_headers)


async def health(request: Request) -> Response:
    # The body never changes for a process: rendered once, not validated and serialised per
    # probe (balancers call this every few seconds, load tests far more often).
    settings = resources_of(request).settings
    body = _health_body(settings.APP_NAME, settings.APP_VERSION)
    return _RenderedResponse(body, _health_headers(body))


probe_router.add_api_route(
    "",
    health,
    methods=["GET"],
    summary="Process is up (no dependency I/O)",
    response_model=HealthStatus,
    route_class_override=PlainRequestRoute,
)


@router.get("/liveness", summary="Liveness probe (never touches Postgres or Redis)")
async def liveness() -> dict[str, str]:
    return {"status": "ok"}


async def _dependency_checks(resources: Resources) -> dict[str, CheckResult]:
    database, redis = await asyncio.gather(
        check_database(resources.engine), check_redis(resources.redis)
    )
    return {"database": database, "redis": redis}


@router.get(
    "/readiness",
    summary="Readiness probe",
    responses={503: {"description": "Not ready: a dependency is down or the app is draining"}},
)
async def readiness(resources: ResourcesDep) -> Response:
    if resources.draining:
        return JSONResponse(
            error_body(["shutting down"], "draining", checks={}),
            status_code=503,
            headers={"Retry-After": READINESS_RETRY_AFTER},
        )
    checks = await _dependency_checks(resources)
    failing = _failing_required(checks, resources.settings.REDIS_REQUIRED)
    # Public: statuses only. Why a check failed goes to the log and to /health/detailed.
    body = {name: result.public() for name, result in checks.items()}
    if resources.replicas is not None:
        # Reported, never required: while the primary answers, reads fall back to it.
        replicas = [_public_replica(replica) for replica in resources.replicas.status()]
        body["replicas"] = {"status": "reported", "replicas": replicas}
    if failing:
        for name in failing:
            log.warning("readiness_check_failed", check=name, error=checks[name].error)
        messages = [f"{name} is unavailable" for name in failing]
        return JSONResponse(
            error_body(messages, "not_ready", checks=body),
            status_code=503,
            headers={"Retry-After": READINESS_RETRY_AFTER},
        )
    return JSONResponse({"status": "ok", "checks": body})


def _public_replica(status: dict[str, Any]) -> dict[str, Any]:
    """A replica as readiness shows it: no address, no error (detailed health has them)."""
    return {key: status[key] for key in ("name", "status", "lag_seconds")}


def _failing_required(checks: dict[str, CheckResult], redis_required: bool) -> list[str]:
    required = ["database"] + (["redis"] if redis_required else [])
    return [name for name in required if checks[name].status != "ok"]


def _overall_status(checks: dict[str, CheckResult], redis_required: bool) -> str:
    if checks["database"].status != "ok":
        return "down"
    if checks["redis"].status == "down":
        return "down" if redis_required else "degraded"
    return "ok"


@router.get("/detailed", summary="Dependency, pool, breaker and system status (operators)")
async def detailed(resources: ResourcesDep, _: None = OperatorOnly) -> dict[str, Any]:
    checks, storage = await asyncio.gather(
        _dependency_checks(resources), check_storage(resources.image_storage)
    )
    database = checks["database"].as_dict()
    database["pool"] = database_pool(resources.engine)
    # Where Redis is and why it failed last: for operators only, not on the public probes.
    redis = checks["redis"].as_dict()
    redis.update(resources.redis.describe(with_last_error=checks["redis"].status == "down"))
    settings = resources.settings
    replicas = resources.replicas.status() if resources.replicas is not None else []
    status = _overall_status(checks, settings.REDIS_REQUIRED)
    if status == "ok" and any(replica["status"] != "ok" for replica in replicas):
        status = "degraded"  # the primary serves the reads a replica cannot
    if status == "ok" and _uploads_refused(storage, resources):
        status = "degraded"  # everything but uploads (and S3-served images) works
    return {
        "status": status,
        "version": settings.APP_VERSION,
        "environment": settings.APP_ENV,
        "uptime_seconds": round(time.monotonic() - resources.started_at, 1),
        "draining": resources.draining,
        "checks": {"database": database, "redis": redis, "storage": storage.as_dict()},
        "replicas": replicas,
        "circuit_breakers": {name: b.state.value for name, b in resources.breakers.items()},
        "rate_limiter": resources.rate_limiter.status() if resources.rate_limiter else None,
        "system": await asyncio.to_thread(system.snapshot),
    }


def _uploads_refused(storage: CheckResult, resources: Resources) -> bool:
    breaker = resources.breakers.get("storage")
    return storage.status != "ok" or (breaker is not None and breaker.state is BreakerState.OPEN)


@router.get(
    "/metrics",
    summary="Prometheus exposition",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
async def metrics(
    resources: ResourcesDep,
    _: None = OperatorOnly,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    app_metrics = resources.metrics
    settings = resources.settings
    await refresh_worker_gauges(app_metrics, resources.engine, settings)
    for name, breaker in resources.breakers.items():
        app_metrics.breaker_state.labels(name).set(STATE_VALUES[breaker.state])
    # Readiness as Prometheus sees it, evaluated at each scrape (bounded like the probe), so an
    # alert does not depend on who calls the probe, or how often.
    checks = await _dependency_checks(resources)
    for name, result in checks.items():
        if result.status != "disabled":
            app_metrics.dependency_up.labels(name).set(result.status == "ok")
    failing = _failing_required(checks, settings.REDIS_REQUIRED)
    app_metrics.ready.set(not resources.draining and not failing)
    # Prometheus asks for OpenMetrics first; that format carries the exemplars (trace ids).
    payload, content_type = app_metrics.render(
        openmetrics=accept is not None and "application/openmetrics-text" in accept
    )
    return Response(payload, media_type=content_type)
