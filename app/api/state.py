"""Everything the lifespan creates, kept on `app.state.resources` and read via dependencies."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.tokens import SigningKeys
from app.db.cache import Cache
from app.db.recent_writes import RecentWriters
from app.db.redis import RedisService
from app.db.replicas import ReplicaSet
from app.db.token_versions import TokenVersions
from app.observability.metrics import AppMetrics
from app.resilience.circuit_breaker import CircuitBreaker
from app.resilience.rate_limit import RateLimiter
from app.services.storage import ImageStorage


@dataclass
class Resources:
    settings: Settings
    metrics: AppMetrics
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    redis: RedisService
    cache: Cache
    breakers: dict[str, CircuitBreaker]
    image_storage: ImageStorage
    signing_keys: SigningKeys
    token_versions: TokenVersions
    rate_limiter: RateLimiter | None = None
    # Both None without DATABASE_REPLICA_URLS: every read goes to the primary.
    replicas: ReplicaSet | None = None
    recent_writers: RecentWriters | None = None
    started_at: float = field(default_factory=time.monotonic)
    # Set when shutdown begins: readiness answers 503 from then on.
    draining: bool = False
