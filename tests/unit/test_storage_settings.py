"""UPLOAD_STORAGE=s3 settings: refused at start without a bucket or keys, the secret never shown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.core.config import Settings

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3-secret-that-must-not-be-logged-0123456789"
COMPLETE = {
    "UPLOAD_STORAGE": "s3",
    "S3_BUCKET": "images",
    "S3_ACCESS_KEY_ID": "AKIAEXAMPLE",
    "S3_SECRET_ACCESS_KEY": SECRET,
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)


def build(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_local_storage_needs_no_s3_setting() -> None:
    assert build().UPLOAD_STORAGE == "local"


def test_complete_s3_settings_are_accepted_and_the_secret_is_hidden() -> None:
    settings = build(**COMPLETE, S3_ENDPOINT_URL="https://minio.internal:9000")
    assert settings.S3_SECRET_ACCESS_KEY is not None
    assert settings.S3_SECRET_ACCESS_KEY.get_secret_value() == SECRET
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings.model_dump())


@pytest.mark.parametrize(
    ("missing", "extra", "named"),
    [
        pytest.param("S3_BUCKET", {}, "S3_BUCKET is required", id="bucket"),
        pytest.param("S3_ACCESS_KEY_ID", {}, "S3_ACCESS_KEY_ID is required", id="key-id"),
        pytest.param("S3_SECRET_ACCESS_KEY", {}, "S3_SECRET_ACCESS_KEY is required", id="secret"),
        pytest.param(None, {"S3_ENDPOINT_URL": "minio:9000"}, "S3_ENDPOINT_URL", id="endpoint"),
        pytest.param(None, {"S3_PUBLIC_BASE_URL": "/media"}, "S3_PUBLIC_BASE_URL", id="public"),
        pytest.param(None, {"S3_PRESIGN_SECONDS": 604801}, "S3_PRESIGN_SECONDS", id="presign"),
        pytest.param(None, {"UPLOAD_STORAGE": "gcs"}, "UPLOAD_STORAGE", id="storage"),
    ],
)
def test_incomplete_s3_settings_are_refused(
    missing: str | None, extra: dict[str, object], named: str
) -> None:
    values: dict[str, object] = {k: v for k, v in COMPLETE.items() if k != missing}
    values.update(extra)
    with pytest.raises(ValidationError) as raised:
        build(**values)
    assert named in str(raised.value)


def test_process_refuses_to_start_naming_what_is_missing(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "UPLOAD_STORAGE": "s3",
        "S3_SECRET_ACCESS_KEY": SECRET,
    }
    result = subprocess.run(
        [sys.executable, "-c", "import app.main"],
        cwd=tmp_path,  # no .env here
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    lines = (result.stdout + result.stderr).splitlines()
    assert len(lines) == 1, lines
    record = json.loads(lines[0])
    assert record["event"] == "settings_invalid"
    assert "S3_BUCKET is required" in record["error"]
    assert "S3_ACCESS_KEY_ID is required" in record["error"]
    assert SECRET not in lines[0]
