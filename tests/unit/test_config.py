"""Settings: defaults, parsing from environment strings, and the production guards."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.core.config import Settings

ROOT = Path(__file__).resolve().parents[2]
STRONG_SECRET = secrets.token_hex(32)


def env_example_value(name: str) -> str:
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1]
    raise AssertionError(f"{name} is not in .env.example")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets reaches Settings: no variable of the surrounding shell."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)


def from_env(monkeypatch: pytest.MonkeyPatch, **values: str) -> Settings:
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)


def test_defaults() -> None:
    settings = Settings(_env_file=None)
    assert settings.APP_ENV == "development"
    assert settings.DEBUG is False
    assert settings.SECRET_KEY is None
    assert settings.DB_POOL_SIZE == 10
    assert settings.DB_MAX_OVERFLOW == 20
    assert 0 < settings.DB_POOL_TIMEOUT <= 5, "a request must not hang on a dry pool"
    assert settings.REDIS_URL is None
    assert settings.REDIS_REQUIRED is False
    assert settings.CORS_ORIGINS == []
    assert settings.TRUSTED_PROXIES == []
    assert settings.METRICS_TOKEN is None
    assert settings.WEB_CONCURRENCY == 1
    assert settings.LOG_LEVEL == "INFO"
    assert settings.log_format == "console"
    assert settings.DATABASE_URL.startswith("postgresql+asyncpg://")


def test_log_format_defaults_to_json_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = from_env(monkeypatch, APP_ENV="production", SECRET_KEY=STRONG_SECRET)
    assert settings.log_format == "json"
    assert from_env(monkeypatch, LOG_FORMAT="console").log_format == "console"


def test_values_come_from_environment_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = from_env(
        monkeypatch,
        DB_POOL_SIZE="3",
        DB_POOL_TIMEOUT="0.5",
        REDIS_REQUIRED="true",
        DEBUG="1",
        METRICS_TOKEN="tok",
    )
    assert settings.DB_POOL_SIZE == 3
    assert settings.DB_POOL_TIMEOUT == 0.5
    assert settings.REDIS_REQUIRED is True
    assert settings.DEBUG is True
    assert settings.METRICS_TOKEN is not None
    assert settings.METRICS_TOKEN.get_secret_value() == "tok"
    assert "tok" not in repr(settings)


def test_empty_values_mean_default(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = from_env(monkeypatch, REDIS_URL="", LOG_FORMAT="", CORS_ORIGINS="")
    assert settings.REDIS_URL is None
    assert settings.LOG_FORMAT is None
    assert settings.CORS_ORIGINS == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://app.example.com", ["https://app.example.com"]),
        ("http://localhost:3000", ["http://localhost:3000"]),
        (
            "http://localhost:3000,https://app.example.com",
            ["http://localhost:3000", "https://app.example.com"],
        ),
        (" http://a.test , http://b.test ,", ["http://a.test", "http://b.test"]),
        ("https://app.example.com/", ["https://app.example.com"]),
    ],
)
def test_cors_origins_parse(monkeypatch: pytest.MonkeyPatch, raw: str, expected: list[str]) -> None:
    assert expected == from_env(monkeypatch, CORS_ORIGINS=raw).CORS_ORIGINS


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("10.0.0.1", ["10.0.0.1"]),
        ("10.0.0.0/8,172.16.0.0/12", ["10.0.0.0/8", "172.16.0.0/12"]),
        ("::1, fd00::/8", ["::1", "fd00::/8"]),
    ],
)
def test_trusted_proxies_parse(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: list[str]
) -> None:
    assert expected == from_env(monkeypatch, TRUSTED_PROXIES=raw).TRUSTED_PROXIES


@pytest.mark.parametrize("raw", ["nginx", "10.0.0.1,not-an-ip", "10.0.0.0/33", "*"])
def test_trusted_proxies_reject_non_addresses(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    with pytest.raises(ValidationError, match="TRUSTED_PROXIES"):
        from_env(monkeypatch, TRUSTED_PROXIES=raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("postgres://u:p@db:5432/x", "postgresql+asyncpg://u:p@db:5432/x"),
        ("postgresql://u:p@db/x", "postgresql+asyncpg://u:p@db/x"),
        ("postgresql+asyncpg://u@127.0.0.1/x", "postgresql+asyncpg://u@127.0.0.1/x"),
    ],
)
def test_database_url_normalised(monkeypatch: pytest.MonkeyPatch, raw: str, expected: str) -> None:
    assert expected == from_env(monkeypatch, DATABASE_URL=raw).DATABASE_URL


@pytest.mark.parametrize("raw", ["mysql://u@db/x", "postgresql+psycopg2://u@db/x", "db:5432"])
def test_database_url_other_drivers_refused(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    with pytest.raises(ValidationError, match="DATABASE_URL"):
        from_env(monkeypatch, DATABASE_URL=raw)


def test_production_accepts_good_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = from_env(
        monkeypatch,
        APP_ENV="production",
        SECRET_KEY=STRONG_SECRET,
        CORS_ORIGINS="https://app.example.com",
    )
    assert settings.is_production
    assert settings.secret_key == STRONG_SECRET


BAD_PRODUCTION_SETTINGS = [
    pytest.param({}, "SECRET_KEY is required", id="secret-missing"),
    pytest.param({"SECRET_KEY": "x" * 31}, "SECRET_KEY must be at least 32", id="secret-short"),
    pytest.param({"SECRET_KEY": "changeme"}, "SECRET_KEY is a placeholder", id="changeme"),
    pytest.param({"SECRET_KEY": "CHANGEME"}, "SECRET_KEY is a placeholder", id="CHANGEME"),
    pytest.param(
        {"SECRET_KEY": env_example_value("SECRET_KEY")},
        "SECRET_KEY is a placeholder",
        id="env-example-secret",
    ),
    pytest.param({"SECRET_KEY": STRONG_SECRET, "DEBUG": "true"}, "DEBUG must be false", id="debug"),
    pytest.param(
        {"SECRET_KEY": STRONG_SECRET, "SECRET_KEY_PREVIOUS": f"{'y' * 40}, short"},
        "SECRET_KEY_PREVIOUS key 2 must be a random key",
        id="previous-key-short",
    ),
    pytest.param(
        {"SECRET_KEY": STRONG_SECRET, "SECRET_KEY_PREVIOUS": "changeme"},
        "SECRET_KEY_PREVIOUS key 1",
        id="previous-key-placeholder",
    ),
    pytest.param(
        {"SECRET_KEY": STRONG_SECRET, "CORS_ORIGINS": "*"}, "CORS_ORIGINS", id="cors-star"
    ),
    pytest.param(
        {"SECRET_KEY": STRONG_SECRET, "CORS_ORIGINS": "https://a.example.com,*"},
        "CORS_ORIGINS",
        id="cors-star-in-list",
    ),
]


@pytest.mark.parametrize(("values", "message"), BAD_PRODUCTION_SETTINGS)
def test_production_guard_refuses(
    monkeypatch: pytest.MonkeyPatch, values: dict[str, str], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        from_env(monkeypatch, APP_ENV="production", **values)


@pytest.mark.parametrize(("values", "message"), BAD_PRODUCTION_SETTINGS)
def test_guards_apply_to_production_only(
    monkeypatch: pytest.MonkeyPatch, values: dict[str, str], message: str
) -> None:
    assert from_env(monkeypatch, APP_ENV="development", **values).APP_ENV == "development"


def test_production_guard_names_every_bad_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError) as raised:
        from_env(monkeypatch, APP_ENV="production", DEBUG="true", CORS_ORIGINS="*")
    text = str(raised.value)
    assert "SECRET_KEY" in text
    assert "DEBUG" in text
    assert "CORS_ORIGINS" in text


def _import_app(tmp_path: Path, **values: str) -> subprocess.CompletedProcess[str]:
    # cwd is an empty directory so no .env is read; only the variables given here apply.
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), **values}
    return subprocess.run(
        [sys.executable, "-c", "import app.main"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("values", "setting"),
    [
        pytest.param({}, "SECRET_KEY", id="secret-missing"),
        pytest.param({"SECRET_KEY": "short"}, "SECRET_KEY", id="secret-short"),
        pytest.param({"SECRET_KEY": "changeme"}, "SECRET_KEY", id="changeme"),
        pytest.param({"SECRET_KEY": STRONG_SECRET, "DEBUG": "true"}, "DEBUG", id="debug"),
        pytest.param({"SECRET_KEY": STRONG_SECRET, "CORS_ORIGINS": "*"}, "CORS_ORIGINS", id="cors"),
        pytest.param(
            {"SECRET_KEY": STRONG_SECRET, "DB_POOL_SIZE": "many"}, "DB_POOL_SIZE", id="type"
        ),
    ],
)
def test_process_refuses_to_start_with_one_json_line(
    tmp_path: Path, values: dict[str, str], setting: str
) -> None:
    result = _import_app(tmp_path, APP_ENV="production", **values)
    assert result.returncode != 0
    lines = (result.stdout + result.stderr).splitlines()
    assert len(lines) == 1, lines
    record = json.loads(lines[0])
    assert record["event"] == "settings_invalid"
    assert record["level"] == "critical"
    assert setting in record["error"]
    if "SECRET_KEY" in values:
        assert values["SECRET_KEY"] not in lines[0], "a secret must not reach the log"


def test_process_imports_with_good_production_settings(tmp_path: Path) -> None:
    result = _import_app(tmp_path, APP_ENV="production", SECRET_KEY=STRONG_SECRET)
    assert result.returncode == 0, result.stdout + result.stderr


def test_previous_keys_are_split_on_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    older, oldest = secrets.token_hex(32), secrets.token_hex(32)
    settings = from_env(
        monkeypatch,
        APP_ENV="production",
        SECRET_KEY=STRONG_SECRET,
        SECRET_KEY_PREVIOUS=f" {older} ,, {oldest},",
    )
    assert settings.previous_secret_keys == (older, oldest)
    assert from_env(monkeypatch, SECRET_KEY_PREVIOUS="").previous_secret_keys == ()
