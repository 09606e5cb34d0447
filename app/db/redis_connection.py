"""Where Redis is and how to reach it: the one place that turns settings into connection
parameters, for both clients of `app.db.redis` (the pipelined per-request connection and
redis-py for the health check and tools).

Three topologies, from the same settings:
- standalone: `REDIS_URL` (redis://, rediss:// or unix://), credentials and db in the URL;
- TLS: `rediss://`, verified against `REDIS_TLS_CA_FILE` (else the system CAs), optionally with a
  client certificate (`REDIS_TLS_CERT_FILE`/`REDIS_TLS_KEY_FILE`); never unverified;
- Sentinel: `REDIS_SENTINELS` + `REDIS_SENTINEL_MASTER`; the primary's address comes from the
  Sentinels (redis-py's `Sentinel.discover_master`, which skips a Sentinel that sees the primary
  down), while the db number, credentials and TLS still come from `REDIS_URL`. The Sentinels are
  reached with the same TLS as Redis when the URL is rediss://.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from app.core.config import Settings
from app.core.redis_settings import parse_host_port

# redis-py's health check: a PING before reusing a connection idle for this many seconds.
HEALTH_CHECK_INTERVAL = 30


@dataclass(frozen=True, slots=True)
class RedisTLS:
    """Certificate checks for rediss://. The chain is always verified."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    check_hostname: bool = True

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file)
        context.check_hostname = self.check_hostname
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def redis_py_kwargs(self) -> dict[str, Any]:
        return {
            "ssl": True,
            "ssl_cert_reqs": "required",
            "ssl_ca_certs": self.ca_file,
            "ssl_certfile": self.cert_file,
            "ssl_keyfile": self.key_file,
            "ssl_check_hostname": self.check_hostname,
        }


@dataclass(frozen=True, slots=True)
class RedisEndpoint:
    """Everything needed to open a connection to the Redis primary (secrets included: never log
    it; `describe()` is the loggable view)."""

    host: str = "localhost"
    port: int = 6379
    path: str | None = None  # unix socket
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: RedisTLS | None = None
    timeout: float = 0.5
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None

    @property
    def uses_sentinel(self) -> bool:
        return bool(self.sentinels)

    def describe(self) -> dict[str, object]:
        """Topology for health and logs, without credentials."""
        info: dict[str, object] = {"tls": self.tls is not None, "db": self.db}
        if self.uses_sentinel:
            info["topology"] = "sentinel"
            info["master_name"] = self.master_name
            info["sentinels"] = [f"{host}:{port}" for host, port in self.sentinels]
        else:
            info["topology"] = "standalone"
            info["address"] = self.path or f"{self.host}:{self.port}"
        return info

    def redis_py_kwargs(self) -> dict[str, Any]:
        """Connection keyword arguments for redis-py (without the address)."""
        kwargs: dict[str, Any] = {
            "db": self.db,
            "username": self.username,
            "password": self.password,
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
            "health_check_interval": HEALTH_CHECK_INTERVAL,
            # The breaker and tenacity policies decide on retries, not the client (redis-py 6+
            # retries three times by default).
            "retry": Retry(NoBackoff(), 0),
            "decode_responses": False,
        }
        if self.tls is not None:
            kwargs.update(self.tls.redis_py_kwargs())
        return kwargs


def endpoint_from_url(
    url: str,
    *,
    timeout: float,
    tls: RedisTLS | None = None,
    sentinels: tuple[tuple[str, int], ...] = (),
    master_name: str | None = None,
    sentinel_username: str | None = None,
    sentinel_password: str | None = None,
) -> RedisEndpoint:
    """The endpoint a URL names; rediss:// without `tls` verifies against the system CAs."""
    params = cast("dict[str, Any]", parse_url(url))
    if url.lower().startswith("rediss:") and tls is None:
        tls = RedisTLS()
    return RedisEndpoint(
        host=params.get("host", "localhost"),
        port=int(params.get("port", 6379)),
        path=params.get("path"),
        db=int(params.get("db", 0)),
        username=params.get("username"),
        password=params.get("password"),
        tls=tls if url.lower().startswith("rediss:") else None,
        timeout=timeout,
        sentinels=sentinels,
        master_name=master_name,
        sentinel_username=sentinel_username,
        sentinel_password=sentinel_password,
    )


def endpoint_from_settings(settings: Settings) -> RedisEndpoint | None:
    """None when Redis is not configured (every feature then runs in process)."""
    if not settings.REDIS_URL:
        return None
    tls = RedisTLS(
        ca_file=settings.REDIS_TLS_CA_FILE,
        cert_file=settings.REDIS_TLS_CERT_FILE,
        key_file=settings.REDIS_TLS_KEY_FILE,
        check_hostname=settings.REDIS_TLS_CHECK_HOSTNAME,
    )
    password = settings.REDIS_SENTINEL_PASSWORD
    return endpoint_from_url(
        settings.REDIS_URL,
        timeout=settings.REDIS_SOCKET_TIMEOUT,
        tls=tls,
        sentinels=tuple(parse_host_port(item) for item in settings.REDIS_SENTINELS),
        master_name=settings.REDIS_SENTINEL_MASTER,
        sentinel_username=settings.REDIS_SENTINEL_USERNAME,
        sentinel_password=password.get_secret_value() if password else None,
    )


def sentinel_for(endpoint: RedisEndpoint) -> Sentinel | None:
    """The Sentinel client shared by both Redis clients, or None without Sentinels."""
    if not endpoint.uses_sentinel:
        return None
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": endpoint.timeout,
        "socket_connect_timeout": endpoint.timeout,
        "username": endpoint.sentinel_username,
        "password": endpoint.sentinel_password,
        "decode_responses": False,
        # Not retried: discover_master moves on to the next Sentinel instead.
        "retry": Retry(NoBackoff(), 0),
    }
    if endpoint.tls is not None:
        sentinel_kwargs.update(endpoint.tls.redis_py_kwargs())
    return Sentinel(list(endpoint.sentinels), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]


def redis_py_client(endpoint: RedisEndpoint, sentinel: Sentinel | None) -> Redis:
    """redis-py for the same endpoint; with Sentinel its pool asks for the primary on every new
    connection and drops a connection whose server answers READONLY (demoted)."""
    kwargs = endpoint.redis_py_kwargs()
    if sentinel is not None:
        assert endpoint.master_name is not None  # nosec B101 # settings guarantee it
        client: Redis = sentinel.master_for(endpoint.master_name, **kwargs)
        return client
    if endpoint.path is not None:
        return Redis(unix_socket_path=endpoint.path, **kwargs)
    return Redis(host=endpoint.host, port=endpoint.port, **kwargs)
