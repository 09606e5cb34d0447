"""Redis over TLS only (`--port 0 --tls-port`), with a CA and certificates the test generates.

With `rediss://` and REDIS_TLS_CA_FILE the app serves cached reads and counts rate limits through
TLS: there is no plain-text port to fall back on, the keys land in Redis and health says up (and
TLS). The server also requires a client certificate (REDIS_TLS_CERT_FILE/KEY_FILE). With a CA
that did not sign the server's certificate, or without the client certificate, Redis counts as
down (no 5xx; detailed health and readiness say so) instead of being used unverified.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from app.core.config import Settings
from app.services.articles import public_article_key
from devstack.redis_sentinel import SentinelProcess
from devstack.servers import RedisServer, RedisTLSFiles, free_port
from devstack.tls_certs import CertPair, issue, make_ca
from tests.support.apps import serve
from tests.support.content import publish, register

pytestmark = pytest.mark.slow

SettingsFactory = Callable[..., Settings]


@dataclass(frozen=True)
class TLSRedis:
    server: RedisServer
    ca: CertPair
    server_cert: CertPair
    client: CertPair
    wrong_ca: CertPair

    def settings(self, **overrides: object) -> dict[str, object]:
        values: dict[str, object] = {
            "REDIS_URL": self.server.url,
            "REDIS_TLS_CA_FILE": str(self.ca.cert),
            "REDIS_TLS_CERT_FILE": str(self.client.cert),
            "REDIS_TLS_KEY_FILE": str(self.client.key),
            "RATE_LIMIT_ENABLED": True,
            "RATE_LIMIT_LOGIN": "2/minute",
            "BREAKER_FAILURE_THRESHOLD": 2,
        }
        values.update(overrides)
        return values

    def admin(self) -> aioredis.Redis:
        """A redis-py client of the test's own, with the client certificate."""
        return aioredis.Redis(
            port=self.server.port,
            ssl=True,
            ssl_ca_certs=str(self.ca.cert),
            ssl_certfile=str(self.client.cert),
            ssl_keyfile=str(self.client.key),
        )


@pytest.fixture(scope="module")
def tls_redis(workdir: Path) -> Iterator[TLSRedis]:
    port = free_port()
    directory = workdir / f"redis-tls-{port}"
    ca = make_ca(directory / "ca")
    wrong_ca = make_ca(directory / "other-ca", name="some-other-ca")
    server_cert = issue(ca, directory, "redis-server")
    client_cert = issue(ca, directory, "conduit-api")
    tls = RedisTLSFiles(server_cert.cert, server_cert.key, ca.cert, auth_clients="yes")
    server = RedisServer(port, directory / "data", tls=tls)
    try:
        server.start()
    except TimeoutError:
        server.stop()
        pytest.skip(f"{server.binary} did not listen with TLS: apt-get install redis-server")
    yield TLSRedis(server, ca, server_cert, client_cert, wrong_ca)
    server.stop()


async def test_the_tls_port_speaks_no_plain_text(tls_redis: TLSRedis) -> None:
    assert tls_redis.server.url.startswith("rediss://")
    plain = aioredis.Redis(
        port=tls_redis.server.port, socket_timeout=1, retry=Retry(NoBackoff(), 0)
    )
    with pytest.raises(redis.ConnectionError):
        await plain.ping()
    await plain.aclose()


async def test_cache_and_limiter_work_through_verified_tls(
    settings_factory: SettingsFactory, tls_redis: TLSRedis
) -> None:
    admin = tls_redis.admin()
    await admin.flushdb()
    async with serve(settings_factory(**tls_redis.settings())) as http:
        slug = await publish(http, await register(http))
        assert (await http.get(f"/api/articles/{slug}")).status_code == 200
        logins = [(await http.post("/api/users/login", json={})).status_code for _ in range(3)]
        detailed = (await http.get("/health/detailed")).json()
        ready = await http.get("/health/readiness")

    assert logins == [422, 422, 429]
    assert await admin.exists(public_article_key(slug)) == 1
    assert await admin.keys("conduit:v1:ratelimit*")
    await admin.aclose()
    redis_check = detailed["checks"]["redis"]
    assert redis_check["status"] == "ok", redis_check
    assert redis_check["tls"] is True
    assert detailed["rate_limiter"]["backend"] == "redis"
    assert ready.status_code == 200
    assert "tls" not in ready.json()["checks"]["redis"]  # the topology is for operators only


@pytest.mark.parametrize(
    ("case", "overrides", "reasons"),
    [
        ("server certificate from another CA", {"REDIS_TLS_CA_FILE": "wrong"}, {"tls"}),
        # TLS 1.3: the server refuses the missing certificate after the client's handshake.
        (
            "no client certificate",
            {"REDIS_TLS_CERT_FILE": None, "REDIS_TLS_KEY_FILE": None},
            {"tls"},
        ),
    ],
)
async def test_unverifiable_tls_counts_as_redis_down(
    settings_factory: SettingsFactory,
    tls_redis: TLSRedis,
    case: str,
    overrides: dict[str, object],
    reasons: set[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    if overrides.get("REDIS_TLS_CA_FILE") == "wrong":
        overrides = {"REDIS_TLS_CA_FILE": str(tls_redis.wrong_ca.cert)}
    optional = settings_factory(**tls_redis.settings(**overrides))
    async with serve(optional) as http:
        slug = await publish(http, await register(http))
        reads = [(await http.get(f"/api/articles/{slug}")).status_code for _ in range(3)]
        logins = [(await http.post("/api/users/login", json={})).status_code for _ in range(3)]
        detailed = (await http.get("/health/detailed")).json()
        ready = await http.get("/health/readiness")
    required = settings_factory(**tls_redis.settings(**overrides), REDIS_REQUIRED=True)
    async with serve(required) as http:
        ready_required = await http.get("/health/readiness")

    assert reads == [200, 200, 200], case
    assert logins == [422, 422, 429], case  # the in-process limiter still refuses
    assert detailed["status"] == "degraded"
    assert detailed["checks"]["redis"]["status"] == "down"
    assert detailed["rate_limiter"]["backend"] == "memory"
    assert ready.status_code == 200  # Redis is optional here
    assert ready_required.status_code == 503
    failures = [
        json.loads(line)
        for line in capsys.readouterr().out.splitlines()
        if '"redis_connection_failed"' in line
    ]
    assert failures, "the failed TLS connect was not logged"
    assert failures[0]["reason"] in reasons, failures[0]


async def test_sentinel_over_tls(
    settings_factory: SettingsFactory, tls_redis: TLSRedis, workdir: Path
) -> None:
    """A TLS-only Sentinel (it reaches the primary over TLS too): the app asks it over TLS,
    verifying its certificate, and connects to the primary it names."""
    port = free_port()
    sentinel = SentinelProcess(port, workdir / f"sentinel-tls-{port}", tls_redis.server.binary)
    cert = tls_redis.server_cert
    sentinel.start(
        f"port 0\ntls-port {port}\nbind 127.0.0.1\ndir {sentinel.workdir}\n"
        f"tls-cert-file {cert.cert}\ntls-key-file {cert.key}\n"
        f"tls-ca-cert-file {tls_redis.ca.cert}\ntls-replication yes\ntls-auth-clients yes\n"
        f"sentinel monitor secure 127.0.0.1 {tls_redis.server.port} 1\n"
    )
    try:
        settings = settings_factory(
            **tls_redis.settings(
                REDIS_URL="rediss://not-used.invalid/0",
                REDIS_SENTINELS=f"127.0.0.1:{port}",
                REDIS_SENTINEL_MASTER="secure",
            )
        )
        async with serve(settings) as http:
            slug = await publish(http, await register(http))
            assert (await http.get(f"/api/articles/{slug}")).status_code == 200
            detailed = (await http.get("/health/detailed")).json()
    finally:
        sentinel.stop()
    redis_check = detailed["checks"]["redis"]
    assert redis_check["status"] == "ok", redis_check
    assert (redis_check["topology"], redis_check["tls"]) == ("sentinel", True)
    assert redis_check["primary"] == f"127.0.0.1:{tls_redis.server.port}"
    assert detailed["rate_limiter"]["backend"] == "redis"
    admin = tls_redis.admin()
    assert await admin.exists(public_article_key(slug)) == 1
    await admin.aclose()
