"""Application factory and lifespan.

`create_app(settings)` wires middleware, handlers and routers without I/O; the lifespan opens the
engine and Redis, waits for Postgres, and closes everything on shutdown. `app` is what
`uvicorn app.main:app` serves; with invalid settings it logs one line naming the setting and the
process exits non-zero.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import math
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from fastapi import FastAPI
from pydantic import ValidationError

from app.api import health
from app.api.routes import OPENAPI_TAGS, include_api_routers, uploads
from app.api.state import Resources
from app.core.config import Settings, get_settings
from app.core.error_handlers import register_error_handlers
from app.core.logging_config import configure_logging, get_logger
from app.core.tokens import signing_keys
from app.db.cache import Cache, CacheInstruments
from app.db.database_production import (
    CONNECTION_ERRORS,
    create_engine,
    create_session_factory,
    wait_for_database,
)
from app.db.recent_writes import RecentWriters, window_seconds, writer_key
from app.db.redis import REDIS_ERRORS, RedisService
from app.db.replicas import Replica, build_replica_set
from app.db.token_versions import TokenVersions
from app.middleware.body_limit import BodySizeLimitMiddleware
from app.middleware.cors import OriginAwareCORSMiddleware
from app.middleware.forwarded import ForwardedHeadersMiddleware
from app.middleware.metrics import MetricsMiddleware
from app.middleware.rate_limit import RateLimitMiddleware
from app.middleware.request_context import RequestContextMiddleware
from app.middleware.security_headers import SecurityHeadersMiddleware
from app.observability.metrics import AppMetrics
from app.observability.trace_context import add_trace_ids
from app.observability.worker_gauges import keep_worker_gauges_fresh
from app.resilience.circuit_breaker import STATE_VALUES, BreakerState, CircuitBreaker
from app.resilience.rate_limit import RateLimiter
from app.resilience.shutdown import GracefulShutdown
from app.schemas.common import error_responses
from app.services.articles import LIST_GENERATION_KEY, public_article_key
from app.services.storage import StorageUnavailableError, build_image_storage
from app.services.tags import TAGS_KEY
from app.services.viewer_sets import feed_key, viewer_generation_key, viewer_set_key

if TYPE_CHECKING:
    from app.middleware.tracing import ServerSpans
    from app.observability.tracing import Tracing

log = get_logger(__name__)


def _breaker(
    name: str, settings: Settings, metrics: AppMetrics, **kwargs: object
) -> CircuitBreaker:
    def export(breaker_name: str, state: BreakerState) -> None:
        metrics.breaker_state.labels(breaker_name).set(STATE_VALUES[state])

    breaker = CircuitBreaker(
        name,
        failure_threshold=settings.BREAKER_FAILURE_THRESHOLD,
        reset_timeout=settings.BREAKER_RESET_SECONDS,
        on_state_change=export,
        **kwargs,  # type: ignore[arg-type]
    )
    export(name, breaker.state)
    return breaker


def _export_replica(metrics: AppMetrics, replica: Replica) -> None:
    lag = replica.lag_seconds
    metrics.replica_lag.labels(replica.name).set(math.inf if lag is None else lag)
    metrics.replica_usable.labels(replica.name).set(1 if replica.usable else 0)


def cache_read_for(path: str, client: str, query: bytes = b"") -> tuple[str, ...]:
    """The cache entries a GET of `path` (below the API prefix) reads first: the rate limiter's
    script returns them along with the count, saving the route a Redis round trip. Signed-in
    readers start from the same public entries as anonymous ones, plus their own (their
    favourites and follows, their feed page: app/services/viewer_sets.py)."""
    if path == "/tags":
        return (TAGS_KEY,)
    signed_in = client.startswith("user:")
    user_id = int(client[len("user:") :]) if signed_in else 0
    if path == "/articles/feed":
        page = _feed_page(query)
        if not signed_in or page is None:
            return ()
        return (
            LIST_GENERATION_KEY,
            viewer_generation_key(user_id),
            feed_key(user_id, *page),
        )
    keys: tuple[str, ...] = ()
    if path == "/articles":
        keys = (LIST_GENERATION_KEY,)
    elif path.startswith("/articles/"):
        slug = path[len("/articles/") :]
        if slug and "/" not in slug:
            keys = (public_article_key(slug),)
            if signed_in:  # their set is tagged with the list generation
                keys += (LIST_GENERATION_KEY,)
    if keys and signed_in:
        keys += (viewer_generation_key(user_id), viewer_set_key(user_id))
    return keys


def _feed_page(query: bytes) -> tuple[int, int] | None:
    """(limit, offset) of a feed request as the route will read them, None when unsure (the
    route then reads its entry itself)."""
    values = dict(parse_qsl(query.decode("latin-1")))
    limit, offset = values.get("limit", "20"), values.get("offset", "0")
    if not (limit.isdigit() and offset.isdigit()) or len(values) > 2:
        return None
    return int(limit), int(offset)


def reads_with_replicas(path: str, client: str, query: bytes = b"") -> tuple[str, ...]:
    """`cache_read_for`, and for a signed-in GET that may read a replica (every signed-in GET
    under /articles: lists, feed, one article, comments) the reader's read-your-writes key."""
    keys = cache_read_for(path, client, query)
    if client.startswith("user:") and path.startswith("/articles"):
        return (*keys, writer_key(int(client[len("user:") :])))
    return keys


def build_resources(
    settings: Settings, metrics: AppMetrics, tracing: Tracing | None = None
) -> Resources:
    engine = create_engine(settings, metrics)
    breakers = {
        "redis": _breaker("redis", settings, metrics, failure_types=REDIS_ERRORS),
        "database": _breaker("database", settings, metrics, failure_types=CONNECTION_ERRORS),
    }
    if settings.UPLOAD_STORAGE == "s3":
        # Only a remote store: a dead one would cost each upload its timeouts and retry.
        breakers["storage"] = _breaker(
            "storage", settings, metrics, failure_types=(StorageUnavailableError,)
        )
    tracer = tracing.tracer("app.db.redis") if tracing is not None else None
    redis = RedisService(settings, breakers["redis"], tracer)
    replicas = build_replica_set(
        settings,
        engine,
        lambda name: breakers.setdefault(
            name, _breaker(name, settings, metrics, failure_types=CONNECTION_ERRORS)
        ),
        on_checked=functools.partial(_export_replica, metrics),
    )
    # How long a replica allowed to serve may still miss a write (docs/read-replicas.md).
    window = None if replicas is None else window_seconds(replicas.max_lag, replicas.interval)
    return Resources(
        settings=settings,
        metrics=metrics,
        engine=engine,
        session_factory=create_session_factory(engine),
        redis=redis,
        cache=Cache(
            redis,
            settings.CACHE_TTL_SECONDS,
            instruments=CacheInstruments(metrics.cache_requests, metrics.retries),
            redelete_after=window,
        ),
        breakers=breakers,
        image_storage=build_image_storage(settings, breakers.get("storage")),
        signing_keys=signing_keys(settings.secret_key, settings.previous_secret_keys),
        token_versions=TokenVersions(redis, settings.JWT_EXPIRE_MINUTES * 60, metrics.retries),
        # GET /api/tags is answered from the cache: its value comes back with the count.
        rate_limiter=RateLimiter(
            settings,
            redis,
            prefetch=cache_read_for if replicas is None else reads_with_replicas,
            decisions=metrics.rate_limit_decisions,
        ),
        replicas=replicas,
        recent_writers=None if window is None else RecentWriters(redis, window),
    )


def freeze_startup_objects() -> None:
    """Move everything alive after start-up (modules, models, routes, compiled statements) out
    of the garbage collector's sight.

    Those objects live as long as the process, yet every full collection walked all of them:
    ~48 ms with the event loop stopped, about once a second under load, which put a stall into
    every request in flight. Frozen (`gc.freeze`, meant for exactly this), a full collection
    takes ~5 ms and the process spends ~7 % less CPU per request. Cycles created later are
    still collected. Once per process: later apps (tests build many) have nothing new to add.
    """
    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    tracing: Tracing | None = app.state.tracing
    if tracing is not None:
        tracing.start()
    resources = build_resources(settings, app.state.metrics, tracing)
    app.state.resources = resources
    log.info(
        "app_starting",
        environment=settings.APP_ENV,
        version=settings.APP_VERSION,
        redis="enabled" if resources.redis.enabled else "disabled",
    )
    await wait_for_database(
        resources.engine, settings.DB_STARTUP_TIMEOUT, retries=resources.metrics.retries
    )
    await resources.image_storage.start()
    shutdown = GracefulShutdown(
        settings.SHUTDOWN_DRAIN_SECONDS,
        settings.SHUTDOWN_GRACE_SECONDS,
        on_drain=lambda: setattr(resources, "draining", True),
    )
    shutdown.install()
    gauges = asyncio.create_task(
        keep_worker_gauges_fresh(resources.metrics, resources.engine, settings)
    )
    replica_checks = None
    if resources.replicas is not None:
        await resources.replicas.refresh()  # reads use a replica from the first request on
        replica_checks = asyncio.create_task(resources.replicas.run())
    freeze_startup_objects()
    try:
        yield
    finally:
        gauges.cancel()
        if replica_checks is not None and resources.replicas is not None:
            replica_checks.cancel()
            await resources.replicas.dispose()
        shutdown.uninstall()
        resources.draining = True
        resources.cache.cancel_delayed_deletes()
        await resources.redis.close()
        await resources.image_storage.close()
        await resources.engine.dispose()
        if tracing is not None:
            await asyncio.to_thread(tracing.stop)
        resources.metrics.process_exited()
        log.info("app_stopped")


def _tracing_for(settings: Settings) -> Tracing | None:
    """The tracing setup when an OTLP endpoint is configured; nothing is imported otherwise."""
    if not settings.tracing_enabled:
        return None
    from app.observability.tracing import Tracing

    return Tracing(settings)


def _server_spans(tracing: Tracing) -> ServerSpans:
    from app.middleware.tracing import ServerSpans

    return ServerSpans(tracing.provider)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    tracing = _tracing_for(settings)
    configure_logging(
        level=settings.LOG_LEVEL,
        log_format=settings.log_format,
        log_file=settings.LOG_FILE,
        error_file=settings.LOG_ERROR_FILE,
        max_bytes=settings.LOG_FILE_MAX_BYTES,
        backups=settings.LOG_FILE_BACKUP_COUNT,
        context=[add_trace_ids] if tracing is not None else [],
    )
    app = FastAPI(
        title="Conduit API",
        version=settings.APP_VERSION,
        description="RealWorld (Conduit) backend with a production layer.",
        debug=settings.DEBUG,
        lifespan=lifespan,
        docs_url=None if settings.is_production else "/docs",
        redoc_url=None,
        # Every route answers errors in the one envelope; this also replaces FastAPI's
        # default 422 schema (HTTPValidationError) in the published document.
        responses=error_responses(422, 500),
        openapi_tags=OPENAPI_TAGS,
        # FastAPI's own OpenTelemetry bridge is off: the request span is ours (see
        # app.middleware.tracing), and left on it asks the OTel API for the global tracer,
        # meter and logger providers on every request, each lookup a miss in os.environ:
        # about 2 % of a cached read's CPU, tracing on or off (py-spy, docs/performance.md).
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.settings = settings
    app.state.tracing = tracing
    app.state.metrics = metrics = AppMetrics()
    register_error_handlers(app)
    # Routes are matched in the order included (see RESOURCE_ROUTERS): the balancers' probe
    # first, then the API, then what operators and Kubernetes call every few seconds at most.
    app.include_router(health.probe_router)
    include_api_routers(app, settings.API_PREFIX)
    app.include_router(health.router)
    if settings.UPLOAD_URL_PREFIX.startswith("/"):  # else a CDN or object store serves them
        app.include_router(uploads.files_router, prefix=settings.UPLOAD_URL_PREFIX.rstrip("/"))

    # Added innermost first: the last one added is the outermost.
    app.add_middleware(RateLimitMiddleware, api_prefix=settings.API_PREFIX)
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.REQUEST_MAX_BYTES,
        exempt_paths=[f"{settings.API_PREFIX}/uploads"],
    )
    app.add_middleware(
        OriginAwareCORSMiddleware,
        allow_origins=settings.CORS_ORIGINS,
        allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
        expose_headers=[
            "X-Request-ID",
            "Retry-After",
            "RateLimit-Limit",
            "RateLimit-Remaining",
            "RateLimit-Reset",
        ],
        max_age=600,
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics, exemplars=tracing is not None)
    # With tracing on, the request context also holds the server span: around the access log
    # and the metrics, so both see it, and inside the forwarded-headers middleware, so the span
    # records the real client address.
    app.add_middleware(
        RequestContextMiddleware,
        expose_errors=settings.DEBUG,
        spans=_server_spans(tracing) if tracing is not None else None,
    )
    app.add_middleware(SecurityHeadersMiddleware, hsts=settings.is_production)
    app.add_middleware(ForwardedHeadersMiddleware, trusted_proxies=settings.TRUSTED_PROXIES)
    return app


def _app_from_environment() -> FastAPI:
    try:
        return create_app(get_settings())
    except ValidationError as exc:
        configure_logging(log_format="json")
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: "
            f"{str(e['msg']).removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        log.critical("settings_invalid", error=problems)
        sys.exit(1)


app = _app_from_environment()
