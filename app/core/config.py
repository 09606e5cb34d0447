"""Settings: one typed source of configuration, read from the environment and `.env`.

Every field carries its default and a one-line description; `.env.example` lists them all.
`get_settings()` is cached so the process parses the environment once, but the app receives
its Settings through `create_app(settings)` so tests can build apps with other values.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.core.redis_settings import redis_setting_problems
from app.core.storage_settings import s3_setting_problems

# Values that must never sign production tokens: the documented placeholders.
PLACEHOLDER_SECRETS = frozenset(
    {
        "changeme",
        "change-me",
        "secret",
        "dev-insecure-secret-key-change-me-0000000000",
        "replace-with-64-random-characters-from-openssl-rand-hex-32",
    }
)
MIN_SECRET_LENGTH = 32

CommaList = Annotated[list[str], NoDecode]


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _asyncpg_url(value: str) -> str:
    if value.startswith(("postgres://", "postgresql://")):
        return "postgresql+asyncpg://" + value.split("://", 1)[1]
    if not value.startswith("postgresql+asyncpg://"):
        raise ValueError("must start with postgresql+asyncpg://")
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        case_sensitive=False,
    )

    # --- application -------------------------------------------------------------------
    APP_NAME: str = Field("conduit-api", description="Service name in logs and metrics")
    APP_VERSION: str = Field("0.1.0", description="Version reported by /health")
    APP_ENV: Literal["development", "test", "production"] = Field(
        "development", description="development | test | production (production enables guards)"
    )
    DEBUG: bool = Field(False, description="Debug mode; refused in production")
    SECRET_KEY: SecretStr | None = Field(
        None, description="Signs JWTs; required in production, at least 32 characters"
    )
    SECRET_KEY_PREVIOUS: SecretStr | None = Field(
        None,
        description="Retired signing keys, comma-separated: their tokens still verify "
        "(key rotation without logouts); each at least 32 characters in production",
    )
    JWT_EXPIRE_MINUTES: int = Field(60 * 24, ge=1, description="Lifetime of issued tokens")
    WEB_CONCURRENCY: int = Field(1, ge=1, description="Uvicorn worker processes")
    API_PREFIX: str = Field("/api", description="Mount point of the Conduit API")

    # --- database ------------------------------------------------------------------------
    DATABASE_URL: str = Field(
        "postgresql+asyncpg://conduit:conduit@127.0.0.1:5432/conduit",
        description="SQLAlchemy URL, postgresql+asyncpg://user:password@host:port/db",
    )
    DB_POOL_SIZE: int = Field(10, ge=1, description="Connections kept open per worker")
    DB_MAX_OVERFLOW: int = Field(20, ge=0, description="Extra connections allowed under load")
    DB_POOL_TIMEOUT: float = Field(
        2.0, gt=0, description="Seconds a request waits for a pooled connection before 503"
    )
    DB_POOL_RECYCLE: int = Field(1800, ge=1, description="Seconds before a connection is renewed")
    DB_CONNECT_TIMEOUT: float = Field(3.0, gt=0, description="Seconds to open a DB connection")
    DB_STATEMENT_TIMEOUT_MS: int = Field(
        5000, ge=1, description="Server-side statement_timeout for every connection"
    )
    DB_PLAN_CACHE_MODE: Literal["force_generic_plan", "auto", "force_custom_plan"] = Field(
        "force_generic_plan",
        description="plan_cache_mode of the app's connections: the app's prepared statements "
        'are planned once per connection (docs/performance.md, "Planned once")',
    )
    DB_JIT: bool = Field(
        False, description="Postgres JIT for the app's statements (off: OLTP reads gain nothing)"
    )
    DB_STARTUP_TIMEOUT: float = Field(
        30.0, ge=0, description="Seconds start-up waits for Postgres (backoff) before serving"
    )
    DB_ECHO: bool = Field(False, description="Log every SQL statement (development only)")
    DB_PGBOUNCER_TRANSACTION_MODE: bool = Field(
        False,
        description="Behind PgBouncer in transaction mode: unnamed statements, no statement "
        "caches, no statement_timeout startup parameter",
    )
    DATABASE_REPLICA_URLS: CommaList = Field(
        default_factory=list,
        description="Comma-separated streaming-replica URLs for GET reads; empty = primary only",
    )
    DATABASE_REPLICA_MAX_LAG_SECONDS: float = Field(
        5.0, gt=0, le=300, description="A replica further behind than this serves no reads"
    )
    DATABASE_REPLICA_CHECK_SECONDS: float = Field(
        1.0, gt=0, le=10, description="How often each worker measures every replica's lag"
    )
    DATABASE_REPLICA_POOL_SIZE: int = Field(
        5, ge=1, description="Connections kept open per replica per worker"
    )
    DATABASE_REPLICA_MAX_OVERFLOW: int = Field(
        5, ge=0, description="Extra replica connections per worker for bursts, closed after use"
    )

    # --- redis ---------------------------------------------------------------------------
    REDIS_URL: str | None = Field(None, description="redis://host:port/db; unset = in-process")
    REDIS_REQUIRED: bool = Field(False, description="Readiness fails while Redis is down")
    REDIS_SOCKET_TIMEOUT: float = Field(0.5, gt=0, description="Seconds per Redis command")
    REDIS_TLS_CA_FILE: str | None = Field(
        None, description="PEM CA bundle that verifies Redis (rediss://); unset = system CAs"
    )
    REDIS_TLS_CERT_FILE: str | None = Field(
        None, description="Client certificate (PEM) for Redis servers that require one"
    )
    REDIS_TLS_KEY_FILE: str | None = Field(
        None, description="Private key (PEM) of REDIS_TLS_CERT_FILE"
    )
    REDIS_TLS_CHECK_HOSTNAME: bool = Field(
        True, description="Match Redis' certificate to the host name (the chain is always verified)"
    )
    REDIS_SENTINELS: CommaList = Field(
        default_factory=list,
        description="Comma-separated Sentinel host:port list; set = the primary comes from them",
    )
    REDIS_SENTINEL_MASTER: str | None = Field(
        None, description="Name of the primary the Sentinels monitor (needed with REDIS_SENTINELS)"
    )
    REDIS_SENTINEL_USERNAME: str | None = Field(
        None, description="ACL user for the Sentinels themselves (not for Redis)"
    )
    REDIS_SENTINEL_PASSWORD: SecretStr | None = Field(
        None, description="Password for the Sentinels themselves (requirepass in sentinel.conf)"
    )
    CACHE_TTL_SECONDS: int = Field(60, ge=1, description="TTL of cached reads")

    # --- resilience ----------------------------------------------------------------------
    BREAKER_FAILURE_THRESHOLD: int = Field(
        5, ge=1, description="Consecutive failures that open a circuit breaker"
    )
    BREAKER_RESET_SECONDS: float = Field(
        5.0, gt=0, description="Seconds an open breaker waits before one trial call"
    )

    # --- rate limits (count/period, e.g. "100/minute"; see the `limits` library) ----------
    RATE_LIMIT_ENABLED: bool = Field(True, description="Apply per-client rate limits")
    RATE_LIMIT_DEFAULT: str = Field("100/minute", description="Per client, every API route")
    RATE_LIMIT_WRITE: str = Field("30/minute", description="Per client, POST/PUT/DELETE routes")
    RATE_LIMIT_LOGIN: str = Field("10/minute", description="Per client, POST /api/users/login")
    RATE_LIMIT_REGISTER: str = Field("5/minute", description="Per client, POST /api/users")
    RATE_LIMIT_LOGIN_ACCOUNT: str = Field(
        "10/hour", description="Failed logins per account (submitted email), from any client"
    )

    REQUEST_MAX_BYTES: int = Field(
        1024 * 1024, ge=1024, description="Largest JSON request body (uploads have their own)"
    )

    # --- uploads -------------------------------------------------------------------------
    UPLOAD_DIR: str = Field("./uploads", description="Where uploaded images are stored")
    UPLOAD_MAX_BYTES: int = Field(10 * 1024 * 1024, ge=1, description="Largest accepted upload")
    UPLOAD_MAX_PIXELS: int = Field(
        40_000_000, gt=0, description="Largest accepted image, width*height (per frame)"
    )
    UPLOAD_URL_PREFIX: str = Field("/uploads", description="Public URL path of stored images")
    UPLOAD_STORAGE: Literal["local", "s3"] = Field(
        "local", description="local: files under UPLOAD_DIR; s3: an S3-compatible bucket"
    )
    S3_ENDPOINT_URL: str | None = Field(
        None, description="S3 API endpoint (MinIO, R2, moto...); unset = AWS for S3_REGION"
    )
    S3_BUCKET: str | None = Field(None, description="Bucket holding the images (UPLOAD_STORAGE=s3)")
    S3_REGION: str = Field("us-east-1", description="Region the requests are signed for")
    S3_ACCESS_KEY_ID: str | None = Field(None, description="Access key id (UPLOAD_STORAGE=s3)")
    S3_SECRET_ACCESS_KEY: SecretStr | None = Field(
        None, description="Secret access key (UPLOAD_STORAGE=s3); never logged"
    )
    S3_ADDRESSING_STYLE: Literal["auto", "path", "virtual"] = Field(
        "path", description="path: endpoint/bucket/key (MinIO, moto); virtual: bucket.endpoint/key"
    )
    S3_PUBLIC_BASE_URL: str | None = Field(
        None, description="Public URL of the bucket's objects; unset = presigned GET URLs"
    )
    S3_PRESIGN_SECONDS: int = Field(
        3600, ge=1, le=604800, description="Lifetime of presigned GET URLs (SigV4 allows 7 days)"
    )
    S3_TIMEOUT_SECONDS: float = Field(
        5.0, gt=0, description="Connect and read timeout of each S3 request"
    )

    # --- shutdown ------------------------------------------------------------------------
    SHUTDOWN_DRAIN_SECONDS: float = Field(
        5.0, ge=0, description="After SIGTERM: readiness 503 while still serving, for this long"
    )
    SHUTDOWN_GRACE_SECONDS: float = Field(
        20.0, ge=0, description="Then: time in-flight requests get to finish"
    )

    # --- logging -------------------------------------------------------------------------
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", description="Minimum level written"
    )
    LOG_FORMAT: Literal["json", "console"] | None = Field(
        None, description="json | console; default json in production, console otherwise"
    )
    LOG_FILE: str | None = Field(None, description="Also write logs to this rotating file")
    LOG_ERROR_FILE: str | None = Field(None, description="Write ERROR and above here as well")
    LOG_FILE_MAX_BYTES: int = Field(10 * 1024 * 1024, ge=1024, description="Rotate after bytes")
    LOG_FILE_BACKUP_COUNT: int = Field(5, ge=0, description="Rotated files kept")

    # --- http ----------------------------------------------------------------------------
    CORS_ORIGINS: CommaList = Field(
        default_factory=list, description="Comma-separated allowed origins"
    )
    TRUSTED_PROXIES: CommaList = Field(
        default_factory=list,
        description="Comma-separated proxy IPs/CIDRs whose X-Forwarded-* headers are trusted",
    )
    METRICS_TOKEN: SecretStr | None = Field(
        None, description="Bearer token for /health/detailed and /health/metrics"
    )

    # --- tracing (OpenTelemetry's standard variables; off unless an endpoint is set) ----
    OTEL_EXPORTER_OTLP_ENDPOINT: str | None = Field(
        None, description="OTLP/HTTP collector base URL (/v1/traces is appended); enables tracing"
    )
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: str | None = Field(
        None, description="Full OTLP/HTTP traces URL, used as is; wins over the base endpoint"
    )
    OTEL_EXPORTER_OTLP_PROTOCOL: Literal["http/protobuf"] = Field(
        "http/protobuf", description="OTLP transport; only HTTP with protobuf is supported"
    )
    OTEL_SERVICE_NAME: str = Field("conduit-api", description="service.name of every span")
    OTEL_TRACES_SAMPLER: Literal[
        "always_on",
        "always_off",
        "traceidratio",
        "parentbased_always_on",
        "parentbased_always_off",
        "parentbased_traceidratio",
    ] = Field("parentbased_always_on", description="Which requests are traced (OTel's names)")
    OTEL_TRACES_SAMPLER_ARG: float | None = Field(
        None, ge=0, le=1, description="Sampled share for the traceidratio samplers (default 1.0)"
    )

    @field_validator("CORS_ORIGINS", "TRUSTED_PROXIES", "REDIS_SENTINELS", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("TRUSTED_PROXIES")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"not an IP address or CIDR: {item!r}") from exc
        return value

    @field_validator("DATABASE_URL")
    @classmethod
    def _asyncpg_url(cls, value: str) -> str:
        return _asyncpg_url(value)

    @field_validator("DATABASE_REPLICA_URLS", mode="before")
    @classmethod
    def _replica_list(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("DATABASE_REPLICA_URLS")
    @classmethod
    def _asyncpg_replica_urls(cls, value: list[str]) -> list[str]:
        return [_asyncpg_url(url) for url in value]

    @field_validator("CORS_ORIGINS")
    @classmethod
    def _origins_without_path(cls, value: list[str]) -> list[str]:
        # Browsers send `Origin: https://host` with no trailing slash; a listed one never matches.
        return [origin.rstrip("/") if origin != "*" else origin for origin in value]

    @model_validator(mode="after")
    def _redis_topology(self) -> Settings:
        problems = redis_setting_problems(
            url=self.REDIS_URL,
            sentinels=self.REDIS_SENTINELS,
            master=self.REDIS_SENTINEL_MASTER,
            tls_files={
                "REDIS_TLS_CA_FILE": self.REDIS_TLS_CA_FILE,
                "REDIS_TLS_CERT_FILE": self.REDIS_TLS_CERT_FILE,
                "REDIS_TLS_KEY_FILE": self.REDIS_TLS_KEY_FILE,
            },
        )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _production_guards(self) -> Settings:
        problems = s3_setting_problems(
            storage=self.UPLOAD_STORAGE,
            bucket=self.S3_BUCKET,
            access_key_id=self.S3_ACCESS_KEY_ID,
            has_secret=self.S3_SECRET_ACCESS_KEY is not None
            and bool(self.S3_SECRET_ACCESS_KEY.get_secret_value()),
            endpoint_url=self.S3_ENDPOINT_URL,
            public_base_url=self.S3_PUBLIC_BASE_URL,
        )
        if problems:
            # Wrong in every environment: there is no S3 storage without a bucket and keys.
            raise ValueError("; ".join(problems))
        if self.APP_ENV != "production":
            return self
        secret = self.SECRET_KEY.get_secret_value() if self.SECRET_KEY else ""
        if not secret:
            problems.append("SECRET_KEY is required when APP_ENV=production")
        elif secret.lower() in PLACEHOLDER_SECRETS:
            problems.append("SECRET_KEY is a placeholder value; generate a random one")
        elif len(secret) < MIN_SECRET_LENGTH:
            problems.append(f"SECRET_KEY must be at least {MIN_SECRET_LENGTH} characters")
        for position, previous in enumerate(self.previous_secret_keys, start=1):
            if previous.lower() in PLACEHOLDER_SECRETS or len(previous) < MIN_SECRET_LENGTH:
                problems.append(
                    f"SECRET_KEY_PREVIOUS key {position} must be a random key of at least "
                    f"{MIN_SECRET_LENGTH} characters"
                )
        if self.DEBUG:
            problems.append("DEBUG must be false when APP_ENV=production")
        if "*" in self.CORS_ORIGINS:
            problems.append("CORS_ORIGINS must list origins, not '*', when APP_ENV=production")
        if problems:
            # All of them at once: an operator fixes the environment in one round trip.
            raise ValueError("; ".join(problems))
        return self

    @property
    def is_production(self) -> bool:
        return self.APP_ENV == "production"

    @property
    def log_format(self) -> Literal["json", "console"]:
        if self.LOG_FORMAT:
            return self.LOG_FORMAT
        return "json" if self.is_production else "console"

    @property
    def tracing_enabled(self) -> bool:
        return bool(self.OTEL_EXPORTER_OTLP_ENDPOINT or self.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)

    @property
    def otlp_traces_endpoint(self) -> str | None:
        """Where spans are sent: the traces URL as given, else the base URL + /v1/traces (the
        OTLP/HTTP rule for a base endpoint)."""
        if self.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT:
            return self.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
        if self.OTEL_EXPORTER_OTLP_ENDPOINT:
            return self.OTEL_EXPORTER_OTLP_ENDPOINT.rstrip("/") + "/v1/traces"
        return None

    @property
    def secret_key(self) -> str:
        # Outside production a fixed development key keeps tokens valid across reloads.
        if self.SECRET_KEY:
            return self.SECRET_KEY.get_secret_value()
        return "dev-insecure-secret-key-change-me-0000000000"

    @property
    def previous_secret_keys(self) -> tuple[str, ...]:
        """SECRET_KEY_PREVIOUS split on commas, blanks dropped: keys that verify, never sign."""
        if not self.SECRET_KEY_PREVIOUS:
            return ()
        raw = self.SECRET_KEY_PREVIOUS.get_secret_value()
        return tuple(key.strip() for key in raw.split(",") if key.strip())


@lru_cache
def get_settings() -> Settings:
    return Settings()
