"""The local stack's pure parts: stand-in cache tags, the engine's paths and client
environment, the e2e `.env` built from `.env.example` (the engine itself runs in make e2e), and
the Prometheus config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from devstack import standin_images
from devstack.docker_engine import DockerEngine
from devstack.prometheus import render_config
from devstack.standin_images import STANDINS, Standin
from tests.e2e.stack import production_env

MAX_UNIX_SOCKET_PATH = 107  # sun_path is 108 bytes, NUL included


@pytest.fixture
def images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("python", "redis"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "Dockerfile").write_text(f"FROM base\n# {name}\n")
    monkeypatch.setattr(standin_images, "IMAGES_DIR", tmp_path)
    return tmp_path


def test_a_stand_in_tag_follows_its_build_files_only(images: Path) -> None:
    python, redis = Standin("python"), Standin("redis")
    first = python.tag()
    assert first == python.tag()
    assert first.startswith("bookworm-")
    redis_before = redis.tag()
    (images / "python" / "entrypoint.sh").write_text("#!/bin/sh\n")
    assert python.tag() != first  # a new file rebuilds it
    assert redis.tag() == redis_before  # and nothing else
    (images / "python" / "entrypoint.sh").write_text('#!/bin/sh\nexec "$@"\n')
    assert python.tag() not in (first, redis_before)


def test_the_python_stand_in_answers_to_the_dockerfile_default() -> None:
    dockerfile = (Path(__file__).resolve().parents[2] / "Dockerfile").read_text()
    [python] = [standin for standin in STANDINS if standin.official]
    repository, tag = python.official or ("", "")
    assert f"ARG PYTHON_IMAGE={repository.removeprefix('library/')}:{tag}" in dockerfile


def test_engine_paths_stay_short_and_its_own(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*["a-rather-long-directory-name"] * 6)
    engine = DockerEngine(deep)
    assert len(str(engine.socket)) <= MAX_UNIX_SOCKET_PATH
    assert engine.socket != DockerEngine(tmp_path).socket
    env = engine.env
    assert env["DOCKER_HOST"] == f"unix://{engine.socket}"
    assert env["DOCKER_CONFIG"] == str(deep / "config")
    assert env["PATH"].split(":")[0] == str(deep / "bin")
    assert env["DOCKER_BUILDKIT"] == "1"


def test_production_env_replaces_values_and_keeps_the_comments() -> None:
    example = "# a comment\nSECRET_KEY=replace-me\nAPP_ENV=development\n#HTTP_PORT=80\n"
    rendered = production_env(example, {"SECRET_KEY": "s3cr3t", "HTTP_PORT": "18080"})
    assert rendered.splitlines() == [
        "# a comment",
        "SECRET_KEY=s3cr3t",
        "APP_ENV=development",
        "#HTTP_PORT=80",
        "HTTP_PORT=18080",
    ]


def test_every_module_the_makefile_runs_exists() -> None:
    """`make run` starts the local Postgres through `python -m <module>`: a module that moved
    would only show when a newcomer types it."""
    import importlib.util
    import re

    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    modules = set(re.findall(r"\$\(PY\) -m ([\w.]+)", makefile))
    modules |= set(re.findall(r"from ([\w.]+) import", makefile))
    assert "devstack.servers" in modules
    missing = [name for name in sorted(modules) if importlib.util.find_spec(name) is None]
    assert missing == []


def test_the_prometheus_config_scrapes_one_target_with_its_token_file(tmp_path: Path) -> None:
    token_file = tmp_path / "metrics-token"
    text = render_config(
        job="conduit-api",
        target="127.0.0.1:8000",
        metrics_path="/health/metrics",
        credentials_file=token_file,
        rule_files=["/rules/*.yml"],
        scrape_interval="2s",
    )
    config = yaml.safe_load(text)
    assert config["global"] == {
        "scrape_interval": "2s",
        "scrape_timeout": "2s",  # never longer than the interval: Prometheus refuses that
        "evaluation_interval": "1s",
    }
    assert config["rule_files"] == ["/rules/*.yml"]
    [scrape] = config["scrape_configs"]
    assert scrape["job_name"] == "conduit-api"
    assert scrape["metrics_path"] == "/health/metrics"
    assert scrape["authorization"] == {"type": "Bearer", "credentials_file": str(token_file)}
    assert scrape["static_configs"] == [{"targets": ["127.0.0.1:8000"]}]
    [tokenless] = yaml.safe_load(render_config(job="j", target="h:1"))["scrape_configs"]
    assert "authorization" not in tokenless
