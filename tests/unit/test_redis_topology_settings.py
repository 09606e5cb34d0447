"""The Redis topology settings: bad values stop start-up with a message naming the setting, and
the one endpoint both Redis clients use takes the primary from the Sentinels, everything else
from REDIS_URL."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.core.config import Settings
from app.core.redis_settings import parse_host_port
from app.db.redis_connection import endpoint_from_settings

ROOT = Path(__file__).resolve().parents[2]


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("10.0.0.5:26379", ("10.0.0.5", 26379)),
        (" sentinel-0.redis:26379 ", ("sentinel-0.redis", 26379)),
        ("[fd00::5]:26379", ("fd00::5", 26379)),
    ],
)
def test_host_port_forms(item: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(item) == expected


@pytest.mark.parametrize(
    ("sentinels", "message"),
    [
        ("10.0.0.5", "'10.0.0.5' is not host:port"),
        ("10.0.0.5:26379,10.0.0.6", "'10.0.0.6' is not host:port"),
        ("10.0.0.5:263790", "has no valid port"),
        ("10.0.0.5:abc", "has no valid port"),
        ("fd00::5:26379", "an IPv6 address goes in brackets"),
    ],
)
def test_bad_sentinel_lists_are_refused(sentinels: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        settings(REDIS_URL="redis://x/0", REDIS_SENTINELS=sentinels, REDIS_SENTINEL_MASTER="m")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"REDIS_URL": "redis://x/0", "REDIS_SENTINELS": "a:1"}, "REDIS_SENTINEL_MASTER must"),
        ({"REDIS_SENTINELS": "a:1", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_URL is still required"),
        ({"REDIS_URL": "http://x/0"}, "REDIS_URL must start with redis://"),
        ({"REDIS_URL": "rediss://x/0?ssl_cert_reqs=none"}, "use the REDIS_TLS_\\* settings"),
        ({"REDIS_URL": "redis://x/0", "REDIS_TLS_CA_FILE": __file__}, "is not rediss://"),
        ({"REDIS_URL": "rediss://x/0", "REDIS_TLS_CA_FILE": "/nope.pem"}, "no such file"),
        ({"REDIS_URL": "rediss://x/0", "REDIS_TLS_CERT_FILE": __file__}, "go together"),
    ],
)
def test_inconsistent_redis_settings_are_refused(values: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        settings(**values)


def test_a_bad_sentinel_list_stops_the_process_with_one_clear_line() -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "REDIS_URL": "redis://x/0",
        "REDIS_SENTINELS": "10.0.0.5:26379;10.0.0.6:26379",
        "REDIS_SENTINEL_MASTER": "conduit",
    }
    result = subprocess.run(
        [sys.executable, "-c", "import app.main"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "REDIS_SENTINELS" in result.stdout + result.stderr


def test_sentinels_win_over_the_url_host_and_the_rest_comes_from_the_url() -> None:
    endpoint = endpoint_from_settings(
        settings(
            REDIS_URL="redis://app-user:s3cret@ignored-host:6390/4",
            REDIS_SENTINELS="10.0.0.5:26379, 10.0.0.6:26380",
            REDIS_SENTINEL_MASTER="conduit",
            REDIS_SENTINEL_PASSWORD="sentinel-pass",
        )
    )
    assert endpoint is not None
    assert endpoint.uses_sentinel
    assert endpoint.sentinels == (("10.0.0.5", 26379), ("10.0.0.6", 26380))
    assert (endpoint.db, endpoint.username, endpoint.password) == (4, "app-user", "s3cret")
    assert endpoint.sentinel_password == "sentinel-pass"
    described = endpoint.describe()
    assert described["topology"] == "sentinel"
    assert "s3cret" not in repr(described)
    assert "ignored-host" not in repr(described)


def test_rediss_always_verifies() -> None:
    endpoint = endpoint_from_settings(settings(REDIS_URL="rediss://redis.internal:6380/0"))
    assert endpoint is not None
    assert endpoint.tls is not None
    context = endpoint.tls.context()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    kwargs = endpoint.redis_py_kwargs()
    assert kwargs["ssl"] is True
    assert kwargs["ssl_cert_reqs"] == "required"
    plain = endpoint_from_settings(settings(REDIS_URL="redis://redis.internal:6379/0"))
    assert plain is not None
    assert plain.tls is None
