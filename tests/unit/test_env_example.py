"""`.env.example` documents every setting and is itself a valid configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.config import Settings

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"


def _assignments() -> dict[str, tuple[int, str]]:
    """NAME -> (line index, value) for every `NAME=value` line."""
    found: dict[str, tuple[int, str]] = {}
    for index, line in enumerate(ENV_EXAMPLE.read_text().splitlines()):
        if line and not line.startswith("#") and "=" in line:
            name, value = line.split("=", 1)
            assert name not in found, f"{name} is listed twice"
            found[name] = (index, value)
    return found


def test_every_setting_is_listed_with_a_comment_above() -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    listed = _assignments()
    missing = sorted(set(Settings.model_fields) - set(listed))
    assert not missing, f"settings missing from .env.example: {missing}"
    for name in Settings.model_fields:
        index, _ = listed[name]
        above = lines[index - 1] if index else ""
        assert above.startswith("# "), f"{name} has no comment line above it"
        assert len(above.strip()) > 4, f"{name}'s comment is empty"


ROOT = ENV_EXAMPLE.parent
DEPLOYMENT_MARKER = "# --- deployment"
DEPLOYMENT_FILES = ("docker-compose.production.yml", "deploy.sh", "Dockerfile")


def _deployment_start() -> int:
    lines = ENV_EXAMPLE.read_text().splitlines()
    return next(i for i, line in enumerate(lines) if line.startswith(DEPLOYMENT_MARKER))


def test_no_unknown_names() -> None:
    """Above the deployment section every name is an app setting (a typo would be ignored)."""
    start = _deployment_start()
    app_names = {n for n, (i, _) in _assignments().items() if i < start}
    unknown = sorted(app_names - set(Settings.model_fields))
    assert not unknown, f".env.example lists settings the app does not read: {unknown}"


def test_deployment_names_are_used_by_the_deployment_files() -> None:
    start = _deployment_start()
    deployment = {n for n, (i, _) in _assignments().items() if i > start}
    assert deployment
    used_by = "".join((ROOT / name).read_text() for name in DEPLOYMENT_FILES)
    unused = sorted(n for n in deployment if n not in used_by)
    assert not unused, f"deployment settings nothing reads: {unused}"


def test_every_field_has_a_description() -> None:
    undocumented = [n for n, f in Settings.model_fields.items() if not f.description]
    assert not undocumented


def test_env_example_parses_into_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=ENV_EXAMPLE)
    listed = _assignments()
    # Spot-check that values were read from the file rather than defaulted.
    assert listed["DATABASE_URL"][1] == settings.DATABASE_URL
    assert listed["CORS_ORIGINS"][1].split(",") == settings.CORS_ORIGINS
    assert settings.SECRET_KEY is not None
    assert settings.SECRET_KEY.get_secret_value() == listed["SECRET_KEY"][1]
