"""make lint's security analysers, each shown catching the problem it is there for: bandit on
Python with known-bad calls, gixy on the real nginx configs with a flaw put in, detect-secrets on
a copy of the repository with an AWS key planted, hadolint and shellcheck on a bad Dockerfile and
a bad script. Also: every real Dockerfile and shell script passes (make lint runs the same)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from devstack import gixy_check, secrets_check
from devstack.repo_files import ROOT, dockerfiles, repository_files, shell_scripts

VENV_BIN = Path(sys.executable).parent


def run(*command: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        timeout=120,
    )


# --- bandit -------------------------------------------------------------------------------------

BAD_PYTHON = """\
import hashlib
import pickle
import random
import subprocess

import yaml


def handler(name: str, body: bytes, password: str) -> object:
    subprocess.run(f"convert {name}", shell=True)
    token = random.random()
    digest = hashlib.md5(password.encode()).hexdigest()
    settings = yaml.load(body)
    assert name, "an assert without its justification is a finding too"
    return pickle.loads(body), token, digest, settings
"""


def bandit(tmp_path: Path, source: str) -> set[str]:
    """The test ids bandit reports on `source` as app code, with make lint's configuration."""
    app = tmp_path / "app"
    app.mkdir(exist_ok=True)
    (app / "handler.py").write_text(source)
    result = run(VENV_BIN / "bandit", "-c", ROOT / "pyproject.toml", "-r", app, "-f", "json")
    report = json.loads(result.stdout)
    ids = {issue["test_id"] for issue in report["results"]}
    assert result.returncode == (1 if ids else 0), result.stderr
    return ids


def test_bandit_fails_on_shell_injection_pickle_yaml_md5_and_random(tmp_path: Path) -> None:
    found = bandit(tmp_path, BAD_PYTHON)
    assert found >= {"B602", "B301", "B506", "B324", "B311", "B403", "B101"}


def test_bandit_nosec_silences_only_the_named_check_on_its_line(tmp_path: Path) -> None:
    justified = "import random\n\nTOKEN = random.random()  # nosec B311 # not a secret\n"
    assert bandit(tmp_path, justified) == set()
    wrong_id = "import random\n\nTOKEN = random.random()  # nosec B324 # another check\n"
    assert bandit(tmp_path, wrong_id) == {"B311"}


def test_bandit_passes_app() -> None:
    result = run(VENV_BIN / "bandit", "-c", "pyproject.toml", "-r", "app", "--quiet")
    assert result.returncode == 0, result.stdout


# --- gixy ---------------------------------------------------------------------------------------

EDGE, EDGE_S3_MEDIA, ROUTER = gixy_check.CONFIGS


def plugins(config: gixy_check.Config, directory: Path) -> list[str]:
    found = gixy_check.findings(directory / "nginx.conf", config.skips)
    return [finding["plugin"] for finding in found]


def rendered(config: gixy_check.Config, directory: Path) -> Path:
    gixy_check.render(config, directory)
    assert plugins(config, directory) == []  # clean before the flaw goes in
    return directory


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize(
    ("config", "file", "old", "new", "plugin"),
    [
        # A location with an add_header of its own drops every server-level one: /api/ would
        # lose nosniff, X-Frame-Options and the rest.
        pytest.param(
            EDGE,
            "nginx.conf",
            "location /api/ {",
            "location /api/ {\n            add_header Cache-Control no-store;",
            "add_header_redefinition",
            id="add-header-drops-security-headers",
        ),
        # The client's raw Host header (with its port and whatever it claims) sent upstream.
        pytest.param(
            EDGE,
            "nginx.conf",
            "proxy_set_header Host $host;",
            "proxy_set_header Host $http_host;",
            "host_spoofing",
            id="host-spoofing",
        ),
        pytest.param(
            EDGE,
            "tls/tls.conf",
            "ssl_protocols TLSv1.2 TLSv1.3;",
            "ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;",
            "weak_ssl_tls",
            id="tls-1.0",
        ),
        # The S3 media include is checked too, and its skip covers proxy_pass_normalized only.
        pytest.param(
            EDGE_S3_MEDIA,
            "media/media.conf",
            "proxy_set_header Host $proxy_host;",
            "proxy_set_header Host $http_host;",
            "host_spoofing",
            id="s3-media-host-spoofing",
        ),
        # Without the descriptor limit, a busy router runs out of descriptors before connections.
        pytest.param(
            ROUTER,
            "nginx.conf",
            "worker_rlimit_nofile 4096;",
            "",
            "worker_rlimit_nofile_vs_connections",
            id="router-descriptors",
        ),
    ],
)
def test_gixy_fails_on_a_flaw_in_the_rendered_config(
    tmp_path: Path, config: gixy_check.Config, file: str, old: str, new: str, plugin: str
) -> None:
    directory = rendered(config, tmp_path)
    edit(directory / file, old, new)
    assert plugin in plugins(config, directory)


def test_gixy_flags_the_s3_media_proxy_pass_its_skip_is_for(tmp_path: Path) -> None:
    """The one skip is still needed (gixy still flags `/$1`): drop it when this fails."""
    gixy_check.render(EDGE_S3_MEDIA, tmp_path)
    found = gixy_check.findings(tmp_path / "nginx.conf")
    described = [gixy_check.describe(f, EDGE_S3_MEDIA, tmp_path) for f in found]
    assert [f["plugin"] for f in found] == ["proxy_pass_normalized"], described
    assert described[0].startswith("deploy/nginx/s3-media.conf.template:")


def test_gixy_check_passes_and_fails_by_its_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert gixy_check.main() == 0
    # The router with a flaw, as a template of its own: reported against that template's line.
    template = tmp_path / "router.conf"
    template.write_text((ROOT / ROUTER.main).read_text().replace("$host;", "$http_host;"))
    flawed = gixy_check.Config("router", str(template), "router", ROUTER.includes)
    monkeypatch.setattr(gixy_check, "CONFIGS", (flawed,))
    assert gixy_check.main() == 1
    out = capsys.readouterr().out
    assert f"{template}:" in out
    assert "[host_spoofing]" in out


# --- detect-secrets -----------------------------------------------------------------------------


@pytest.fixture
def repository_copy(tmp_path: Path) -> Path:
    """The working tree's repository files (what make lint scans), in a git repository."""
    copy = tmp_path / "repo"
    for name in repository_files():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, copy / name)
    assert run("git", "init", "--quiet", cwd=copy).returncode == 0
    return copy


def secrets_check_in(copy: Path) -> subprocess.CompletedProcess[str]:
    """make lint's step, run in the copy (`-m` imports the copy's devstack, rooted there)."""
    return run(sys.executable, "-m", "devstack.secrets_check", cwd=copy)


def test_detect_secrets_fails_on_a_planted_key_and_an_unaudited_entry_not_a_moved_one(
    repository_copy: Path,
) -> None:
    """One scan (the slow part) for the three cases."""
    # A baselined test secret moves down three lines: no finding, no rewrite of the baseline.
    conftest = repository_copy / "tests" / "conftest.py"
    conftest.write_text("\n\n\n" + conftest.read_text())
    # A real-looking AWS key pair (made up here, so this file holds none) in app code.
    key_id = "AKIA" + "QX7ZPLM2RB4TWN6K"
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "Q3ZT9NV2KL"  # pragma: allowlist secret
    config = repository_copy / "app" / "core" / "config.py"
    with config.open("a") as handle:
        handle.write(f'\nAWS_ACCESS_KEY_ID = "{key_id}"\nAWS_SECRET_ACCESS_KEY = "{secret}"\n')
    # A baselined entry nobody audited.
    path = repository_copy / secrets_check.BASELINE
    baseline = json.loads(path.read_text())
    unaudited, entries = next(iter(baseline["results"].items()))
    entries[0]["is_secret"] = None
    path.write_text(json.dumps(baseline))
    baseline_before = path.read_bytes()

    result = secrets_check_in(repository_copy)

    assert result.returncode == 1, result.stdout + result.stderr
    found = [line for line in result.stdout.splitlines() if line.startswith("detect-secrets: ")]
    planted = [line for line in found if line.startswith("detect-secrets: app/core/config.py:")]
    assert any("AWS Access Key" in line for line in planted), found
    assert [line for line in found if line.startswith(f"detect-secrets: {unaudited}:")], found
    assert not [line for line in found if "tests/conftest.py" in line], found
    assert path.read_bytes() == baseline_before


# --- hadolint and shellcheck --------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", dockerfiles())
def test_hadolint_reports_nothing(dockerfile: str) -> None:
    result = run(VENV_BIN / "hadolint", "--no-color", dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_on_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get update && apt-get install -y curl\n")
    result = run(VENV_BIN / "hadolint", "--no-color", bad)
    assert result.returncode == 1
    assert "DL3007" in result.stdout  # :latest
    assert "DL3009" in result.stdout  # apt lists left in the layer


@pytest.mark.parametrize("script", shell_scripts())
def test_shellcheck_reports_nothing(script: str) -> None:
    result = run(VENV_BIN / "shellcheck", "--severity=style", script)
    assert result.returncode == 0, result.stdout


def test_shellcheck_fails_on_a_bad_script(tmp_path: Path) -> None:
    bad = tmp_path / "deploy"
    bad.write_text('#!/usr/bin/env bash\ncd $1\nrm -rf $TARGET/*\necho "done"\n')
    result = run(VENV_BIN / "shellcheck", "--severity=style", bad)
    assert result.returncode == 1
    assert "SC2164" in result.stdout  # cd without a check: rm then runs in the wrong place
    assert "SC2086" in result.stdout  # unquoted expansion


def test_shell_scripts_are_found_by_name_or_by_their_interpreter(tmp_path: Path) -> None:
    scripts = {
        "run": "#!/usr/bin/env bash\n",
        "entrypoint.sh": 'exec "$@"\n',
        "hook": "#!/bin/sh -e\n",
        "split": "#!/usr/bin/env -S bash -eu\n",
    }
    others = {"tool": "#!/usr/bin/env python3\n", "notes": "bash is mentioned\n", "empty": "#!\n"}
    for name, text in {**scripts, **others}.items():
        (tmp_path / name).write_text(text)
    assert run("git", "init", "--quiet", cwd=tmp_path).returncode == 0
    assert shell_scripts(tmp_path) == sorted(scripts)
