"""deploy/prometheus: the rules, their promtool unit tests, prometheus.yml and alertmanager.yml.

promtool (Debian's `prometheus` package) checks the rule files, runs the unit tests in
deploy/prometheus/tests/ and checks prometheus.yml; amtool (`prometheus-alertmanager`) checks
alertmanager.yml. Without them those tests are skipped, saying which package to install. The
rest needs only the YAML: every alert has a unit test where it fires and one where it stays
silent, and a runbook link to a heading of docs/observability.md.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import ROOT

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
TEST_FILES = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTMANAGER_CONFIG = PROMETHEUS_DIR / "alertmanager.yml"
RUNBOOK = ROOT / "docs" / "observability.md"
RUNBOOK_URL = "https://github.com/conduit-api/conduit-api/blob/main/docs/observability.md#"
# Where the Compose `monitoring` profile mounts the token and the rules (prometheus.yml).
TOKEN_FILE = "/run/secrets/metrics_token"
RULES_GLOB = "/etc/prometheus/rules/*.yml"
SEVERITIES = {"page", "ticket"}


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian: apt-get install {package})")
    return path


def run(*command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, check=False, timeout=300
    )


def load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict), path
    return document


def alerting_rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in RULE_FILES
        for group in load(path)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def alert_names() -> list[str]:
    return sorted({str(rule["alert"]) for rule in alerting_rules()})


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a Markdown heading: lowercased, punctuation dropped, spaces
    turned into hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def runbook_anchors() -> set[str]:
    # Shell comments in fenced code blocks start with `#` too: they are not headings.
    text = re.sub(r"^```.*?^```", "", RUNBOOK.read_text(), flags=re.MULTILINE | re.DOTALL)
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.MULTILINE)
    return {github_anchor(heading) for heading in headings}


def test_there_is_something_to_check() -> None:
    assert [p.name for p in RULE_FILES] == [
        "cause-alerts.yml",
        "slo-alerts.yml",
        "slo-recording.yml",
    ]
    assert TEST_FILES
    assert len(alert_names()) >= 12


def test_promtool_accepts_the_rule_files() -> None:
    promtool = tool("promtool", "prometheus")
    result = run(promtool, "check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_promtool_unit_tests_pass() -> None:
    promtool = tool("promtool", "prometheus")
    result = run(promtool, "test", "rules", *map(str, TEST_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(TEST_FILES), result.stdout


@pytest.mark.slow
def test_promtool_unit_tests_fail_when_an_alert_is_broken(tmp_path: Path) -> None:
    """The unit tests are not vacuous: with the 5xx threshold moved from 5 % to 50 %, the case
    where ConduitHighErrorRatio must fire fails."""
    promtool = tool("promtool", "prometheus")
    shutil.copytree(PROMETHEUS_DIR / "rules", tmp_path / "rules")
    shutil.copytree(PROMETHEUS_DIR / "tests", tmp_path / "tests")
    causes = tmp_path / "rules" / "cause-alerts.yml"
    text = causes.read_text()
    assert text.count("slo:availability:error_ratio:rate5m > 0.05") == 1
    causes.write_text(text.replace("error_ratio:rate5m > 0.05", "error_ratio:rate5m > 0.5"))
    result = run(promtool, "test", "rules", "tests/cause-alerts.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "alertname: ConduitHighErrorRatio" in result.stdout + result.stderr


def test_promtool_accepts_prometheus_yml_with_its_token_and_rules(tmp_path: Path) -> None:
    """Checked for real: the token file and the rule glob point at a temporary copy of what
    Compose mounts, so promtool reads the token and loads every rule file."""
    promtool = tool("promtool", "prometheus")
    config = load(PROMETHEUS_CONFIG)
    assert config["rule_files"] == [RULES_GLOB]
    token = tmp_path / "metrics_token"
    token.write_text("test-metrics-token\n")
    shutil.copytree(PROMETHEUS_DIR / "rules", tmp_path / "rules")
    config["rule_files"] = [str(tmp_path / "rules" / "*.yml")]
    for job in config["scrape_configs"]:
        authorization = job.get("authorization", {})
        if authorization.get("credentials_file") == TOKEN_FILE:
            authorization["credentials_file"] = str(token)
    checked = tmp_path / "prometheus.yml"
    checked.write_text(yaml.safe_dump(config, sort_keys=False))
    assert TOKEN_FILE not in checked.read_text()
    result = run(promtool, "check", "config", str(checked))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in output, output


def test_prometheus_yml_scrapes_every_app_replica_with_the_token() -> None:
    config = load(PROMETHEUS_CONFIG)
    assert config["rule_files"] == [RULES_GLOB]
    [alertmanagers] = config["alerting"]["alertmanagers"]
    assert alertmanagers["static_configs"] == [{"targets": ["alertmanager:9093"]}]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    app = jobs["conduit-api"]
    assert app["metrics_path"] == "/health/metrics"
    assert app["authorization"] == {"type": "Bearer", "credentials_file": TOKEN_FILE}
    [discovery] = app["dns_sd_configs"]
    assert (discovery["names"], discovery["type"], discovery["port"]) == (["app"], "A", 8000)


def test_amtool_accepts_alertmanager_yml() -> None:
    amtool = tool("amtool", "prometheus-alertmanager")
    result = run(amtool, "check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_routes_every_severity_the_rules_use() -> None:
    route = load(ALERTMANAGER_CONFIG)["route"]
    routed = {matcher for child in route["routes"] for matcher in child["matchers"]}
    used = {str(rule["labels"]["severity"]) for rule in alerting_rules()}
    assert used == SEVERITIES
    assert routed >= {f'severity="{severity}"' for severity in SEVERITIES}


def test_every_alert_has_a_severity_and_the_slo_alerts_name_their_slo() -> None:
    for rule in alerting_rules():
        labels = rule["labels"]
        assert labels["severity"] in SEVERITIES, rule["alert"]
        assert set(rule["annotations"]) >= {"summary", "description", "runbook_url"}
        if "Burn" in rule["alert"]:
            assert labels["slo"] in {"availability", "latency"}, rule["alert"]


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_stays_silent() -> None:
    firing: dict[str, int] = defaultdict(int)
    silent: dict[str, int] = defaultdict(int)
    for path in TEST_FILES:
        for case in load(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                counts = firing if check.get("exp_alerts") else silent
                counts[str(check["alertname"])] += 1
    missing = {
        name: [kind for kind, counts in (("fires", firing), ("silent", silent)) if not counts[name]]
        for name in alert_names()
    }
    assert {name: kinds for name, kinds in missing.items() if kinds} == {}
    assert set(firing) | set(silent) <= set(alert_names()), "a test names an unknown alert"


def test_unit_tests_load_every_rule_file() -> None:
    loaded: set[Path] = set()
    for path in TEST_FILES:
        for name in load(path)["rule_files"]:
            rule_file = (path.parent / name).resolve()
            assert rule_file.is_file(), f"{path.name}: {name}"
            loaded.add(rule_file)
    assert loaded == {path.resolve() for path in RULE_FILES}


def test_every_runbook_url_points_at_a_heading_of_the_on_call_page() -> None:
    anchors = runbook_anchors()
    for rule in alerting_rules():
        url = str(rule["annotations"]["runbook_url"])
        assert url.startswith(RUNBOOK_URL), url
        anchor = url.removeprefix(RUNBOOK_URL)
        assert anchor == rule["alert"].lower(), f"{rule['alert']}: {url}"
        assert anchor in anchors, f"{rule['alert']}: no heading '{anchor}' in {RUNBOOK.name}"


def test_the_on_call_page_has_the_sections_it_promises() -> None:
    anchors = runbook_anchors()
    assert {
        "service-level-objectives",
        "alerts",
        "dashboard",
        "following-a-request-log-line-to-trace",
    } <= anchors
    assert github_anchor("Following a request: log line to trace") == (
        "following-a-request-log-line-to-trace"
    )
