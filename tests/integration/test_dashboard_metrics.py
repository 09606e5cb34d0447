"""The Grafana dashboard and the Prometheus rules ask only for what the app exports.

Two checks, over every PromQL expression of deploy/grafana/dashboards/*.json (panel targets,
panels nested in collapsed rows, and the metric of each `label_values(...)` variable query) and
of deploy/prometheus/rules/*.yml (recording and alerting rules):

- each expression parses. Grafana's variables are replaced first, as Grafana does before it
  sends a query: `$__rate_interval` and friends by a duration, the dashboard's own variables by
  a plain value (a variable the dashboard does not define is reported). The parser is
  promql-parser (the Rust port of Prometheus's parser, v2.45 grammar), whose syntax tree also
  yields the selectors; promtool, when installed, parses everything a second time.
- each selector finds a series in a live scrape. The app runs as the image runs it (two uvicorn
  workers in multiprocess mode, the Dockerfile's options) and is driven through every path that
  creates a series: sign-up, login, a write, cached reads missed then hit, logins past the limit,
  and Redis stopped so cache reads fail and are retried. Then `/health/metrics` must contain a
  sample of every metric named, every label a selector filters on, and every value an `=`
  matcher asks for (a renamed bucket bound such as `le="0.3"` is as dead as a renamed metric).
  Names recorded by a rule (`record:`) and the series Prometheus makes itself (`up`, `ALERTS`,
  `ALERTS_FOR_STATE`) are accepted without a sample; the rules that record them are checked.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from devstack.servers import PostgresServer, RedisServer, free_port
from tests.integration.conftest import ROOT, uvicorn_args_from_cmd
from tests.support.databases import fresh_database
from tests.support.live import LiveServer

DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
RULE_FILES = sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "conduit.yml"

# Series Prometheus writes itself: no exporter has them.
PROMETHEUS_SERIES = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})
# Labels Prometheus adds to every scraped series (the target's), absent from the app's output.
TARGET_LABELS = frozenset({"job", "instance"})
# Grafana's global variables that stand for a duration, with a value of the right kind.
GRAFANA_DURATIONS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}
# $name, ${name}, ${name:format}, [[name]] and [[name:format]].
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)(?::\w+)?\]\]|\$(\w+)")
LABEL_VALUES = re.compile(r"^\s*label_values\((?P<selector>.+),\s*\w+\s*\)\s*$", re.DOTALL)
QUERY_RESULT = re.compile(r"^\s*query_result\((?P<expr>.+)\)\s*$", re.DOTALL)
VARIABLE_VALUE = "grafana_variable"

METRICS_TOKEN = "metrics-token-for-the-dashboard-test"
PASSWORD = "correct-horse-battery"


@dataclass(frozen=True)
class Expression:
    source: str  # where it comes from, for the failure message
    promql: str
    # None for a rule (Prometheus substitutes nothing); a dashboard's variables otherwise.
    variables: frozenset[str] | None = None


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: tuple[tuple[str, str, str], ...]  # (label, operator, value)


@dataclass(frozen=True)
class Problem:
    source: str
    metric: str
    detail: str  # empty: the metric itself is not exported

    def __str__(self) -> str:
        return f"{self.source}: {self.metric} {self.detail or 'is not exported'}"


# --- reading the dashboards and the rules -------------------------------------------------------


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside rows (collapsed rows keep theirs in `panels`) included."""
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard_variables(dashboard: dict[str, Any]) -> frozenset[str]:
    return frozenset(v["name"] for v in dashboard.get("templating", {}).get("list", []))


def dashboard_expressions(dashboard: dict[str, Any], name: str) -> list[Expression]:
    variables = dashboard_variables(dashboard)
    found = []
    for panel in _panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr", "").strip():
                where = f"{name}: panel {panel.get('title')!r} target {target.get('refId')}"
                found.append(Expression(where, target["expr"], variables))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        match = LABEL_VALUES.match(text) or QUERY_RESULT.match(text)
        if match:
            where = f"{name}: variable {variable['name']!r}"
            found.append(Expression(where, match.group(1), variables))
    return found


def _rules(paths: list[Path]) -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in paths:
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups", []):
            for rule in group.get("rules", []):
                yield path, rule


def rule_expressions(paths: list[Path]) -> list[Expression]:
    return [
        Expression(
            f"{path.relative_to(ROOT)}: {'record' if 'record' in rule else 'alert'} "
            f"{rule.get('record') or rule.get('alert')}",
            str(rule["expr"]),
        )
        for path, rule in _rules(paths)
    ]


def recorded_names(paths: list[Path]) -> frozenset[str]:
    return frozenset(rule["record"] for _, rule in _rules(paths) if "record" in rule)


def all_expressions() -> list[Expression]:
    expressions = rule_expressions(RULE_FILES)
    for path in DASHBOARDS:
        expressions += dashboard_expressions(json.loads(path.read_text()), path.name)
    return expressions


# --- parsing ------------------------------------------------------------------------------------


class UndefinedVariableError(ValueError):
    pass


def substitute(expression: Expression) -> str:
    """The expression as Prometheus receives it once Grafana has replaced its variables."""
    variables = expression.variables
    if variables is None:
        return expression.promql

    def replace(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name in GRAFANA_DURATIONS:
            return GRAFANA_DURATIONS[name]
        if name in variables:
            return VARIABLE_VALUE
        raise UndefinedVariableError(f"uses ${name}, which is not a variable of the dashboard")

    return VARIABLE.sub(replace, expression.promql)


def parse(expression: Expression) -> promql_parser.Expr:
    return promql_parser.parse(substitute(expression))


def parse_errors(expressions: list[Expression]) -> list[str]:
    errors = []
    for expression in expressions:
        try:
            parse(expression)
        except ValueError as exc:
            errors.append(f"{expression.source}: {exc}\n    {expression.promql}")
    return errors


def _operator(op: promql_parser.MatchOp) -> str:
    # The binding's MatchOp compares but does not hash, so no dict.
    for operator in ("Equal", "NotEqual", "Re", "NotRe"):
        if op == getattr(promql_parser.MatchOp, operator):
            return operator
    raise ValueError(f"unknown matcher operator {op}")


def selectors(expression: Expression) -> list[Selector]:
    found: list[Selector] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = [(m.name, _operator(m.op), m.value) for m in node.matchers.matchers]
            name = node.name or next(
                (v for label, op, v in matchers if label == "__name__" and op == "Equal"),
                # A regex on the name cannot be checked against a list of names: reported.
                f"<{node}>",
            )
            found.append(Selector(name, tuple(m for m in matchers if m[0] != "__name__")))

    promql_parser.walk(parse(expression), visit)
    return found


# --- comparing with a scrape --------------------------------------------------------------------


def exported(exposition: str) -> dict[str, dict[str, set[str]]]:
    """Sample name -> label name -> values seen (only names that have a sample)."""
    series: dict[str, dict[str, set[str]]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels = series.setdefault(sample.name, defaultdict(set))
            for label, label_value in sample.labels.items():
                labels[label].add(label_value)
    return series


def _matches_empty(operator: str, value: str) -> bool:
    """Whether the matcher selects series that lack the label (Prometheus's rule)."""
    if operator in ("Equal", "NotEqual"):
        return (value == "") == (operator == "Equal")
    try:
        matches = re.fullmatch(value, "") is not None
    except re.error:  # RE2 syntax Python lacks: assume the regex needs the label
        matches = False
    return matches == (operator == "Re")


def dead_references(
    expressions: list[Expression], series: dict[str, dict[str, set[str]]], allowed: frozenset[str]
) -> list[Problem]:
    """What each expression asks for that the scrape does not have."""
    problems = []
    for expression in expressions:
        for selector in selectors(expression):
            if selector.metric in allowed:
                continue
            labels = series.get(selector.metric)
            if labels is None:
                problems.append(Problem(expression.source, selector.metric, ""))
                continue
            for label, operator, value in selector.matchers:
                if label in TARGET_LABELS or _matches_empty(operator, value):
                    continue  # a matcher an absent label satisfies cannot empty the selection
                if label not in labels:
                    detail = f"has no label {label!r}"
                elif operator == "Equal" and value not in labels[label] | {VARIABLE_VALUE}:
                    seen = ", ".join(sorted(labels[label]))
                    detail = f"has no series with {label}={value!r} (seen: {seen})"
                else:
                    continue
                problems.append(Problem(expression.source, selector.metric, detail))
    return problems


# --- static checks ------------------------------------------------------------------------------


def test_there_is_something_to_check() -> None:
    assert DASHBOARDS, "no dashboard in deploy/grafana/dashboards"
    assert RULE_FILES, "no rule file in deploy/prometheus/rules"
    expressions = all_expressions()
    assert sum(1 for e in expressions if "panel" in e.source) >= 30
    assert any("rules" in e.source for e in expressions)


def test_every_expression_parses() -> None:
    errors = parse_errors(all_expressions())
    assert not errors, "expressions that do not parse:\n" + "\n".join(errors)


def test_the_parse_check_reports_a_broken_expression_and_an_unknown_variable() -> None:
    known = frozenset({"job"})
    broken = [
        Expression("unclosed", 'sum(rate(http_requests_total{job="$job"}[5m])', known),
        Expression("unknown variable", 'http_requests_total{route="$rout"}', known),
        Expression("fine", 'sum(rate(http_requests_total{job="$job"}[$__rate_interval]))', known),
    ]
    errors = parse_errors(broken)
    assert len(errors) == 2, errors
    assert errors[0].startswith("unclosed:")
    assert errors[1].startswith("unknown variable:")
    assert "$rout" in errors[1]


def test_promtool_parses_every_expression(tmp_path: Path) -> None:
    """A second opinion from Prometheus's own parser: each expression as a recording rule."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian's prometheus package): promql-parser only")
    expressions = all_expressions()
    rules = [
        {"record": f"dashboard_check:expression_{n}", "expr": substitute(e)}
        for n, e in enumerate(expressions)
    ]
    path = tmp_path / "expressions.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "check", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules)} rules found" in result.stdout


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def test_dashboard_is_provisionable(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    datasource = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]
    provider = yaml.safe_load(PROVIDERS.read_text())["providers"][0]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert dashboard["uid"]
    assert dashboard["id"] is None
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == datasource["type"] == "prometheus"
    assert variables["datasource"]["current"]["value"] == datasource["uid"]
    ids = [p["id"] for p in _panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    row = ""
    for panel in _panels(dashboard["panels"]):
        assert panel.get("title"), panel
        if panel["type"] == "row":
            row = panel["title"]
            continue
        assert len(panel.get("description", "")) > 40, f"{panel['title']}: say what to look for"
        for owner in (panel, *panel["targets"]):
            assert owner["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, owner
        for target in panel["targets"]:
            ranges = set(re.findall(r"\[([^\]]+)\]", target["expr"]))
            # Fixed windows belong to the SLOs (30 days, the burn-rate windows); every other
            # graph follows the zoom.
            if not row.startswith("SLO"):
                assert ranges <= {"$__rate_interval"}, (panel["title"], ranges)


# --- the live scrape ----------------------------------------------------------------------------


def _register(http: httpx.Client, username: str) -> str:
    user = {"username": username, "email": f"{username}@example.com", "password": PASSWORD}
    response = http.post("/api/users", json={"user": user})
    assert response.status_code == 201, response.text
    token: str = response.json()["user"]["token"]
    return token


def _drive_traffic(http: httpx.Client, redis: RedisServer) -> None:
    """Requests that make every family of the catalogue, and each of its label values that
    the dashboard or the rules select with `=`, appear in the scrape."""
    token = _register(http, "dashboard")
    auth = {"Authorization": f"Token {token}"}
    article = {"title": "Dashboards", "description": "d", "body": "b", "tagList": ["metrics"]}
    response = http.post("/api/articles", json={"article": article}, headers=auth)
    assert response.status_code == 201, response.text
    slug = response.json()["article"]["slug"]
    reads = ["/api/articles", f"/api/articles/{slug}", "/api/tags", "/api/profiles/dashboard"]
    for _ in range(2):  # the first read misses and fills the cache, the second hits
        for path in reads:
            assert http.get(path).status_code == 200, path
    login = {"user": {"email": "dashboard@example.com", "password": PASSWORD}}
    statuses = [http.post("/api/users/login", json=login).status_code for _ in range(4)]
    assert 429 in statuses, f"the login limit (2/minute) should refuse: {statuses}"
    assert http.get("/api/articles/no-such-article").status_code == 404
    # Redis gone: reads fall back to Postgres; each failed GET is retried once, then counted.
    redis.stop()
    for _ in range(6):
        for path in ("/api/tags", "/api/articles"):
            assert http.get(path).status_code == 200, path


@pytest.fixture(scope="module")
def scrape(
    base_env: dict[str, str],
    postgres: PostgresServer,
    workdir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    redis = RedisServer(free_port(), workdir / "redis-dashboard")
    redis.start()
    env = {
        **base_env,
        "DATABASE_URL": fresh_database(postgres),
        "REDIS_URL": redis.url,
        # As the image runs it: several workers sharing one view of the metrics.
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path_factory.mktemp("dashboard-multiproc")),
        "WEB_CONCURRENCY": "2",
        "METRICS_TOKEN": METRICS_TOKEN,
        "RATE_LIMIT_ENABLED": "true",
        "RATE_LIMIT_LOGIN": "2/minute",
        "SHUTDOWN_DRAIN_SECONDS": "0",
    }
    server = LiveServer(env, workers=2, extra_args=uvicorn_args_from_cmd())
    try:
        server.start(timeout=60)
        with httpx.Client(base_url=server.url, timeout=10) as http:
            _drive_traffic(http, redis)
            response = http.get(
                "/health/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
            )
        assert response.status_code == 200, response.text
        yield response.text
    finally:
        server.stop()
        redis.stop()


@pytest.mark.slow
def test_every_metric_named_is_in_a_live_scrape(scrape: str) -> None:
    allowed = PROMETHEUS_SERIES | recorded_names(RULE_FILES)
    problems = dead_references(all_expressions(), exported(scrape), allowed)
    missing = sorted({p.metric for p in problems if not p.detail})
    report = "\n".join(map(str, problems))
    assert not problems, f"not exported by the app: {', '.join(missing) or 'none'}\n{report}"


@pytest.mark.slow
def test_the_check_reports_a_dead_panel(scrape: str) -> None:
    """A made-up metric, a misspelt label and a bucket bound the histogram does not have, in
    panels nested in a collapsed row, are each reported."""
    dashboard = copy.deepcopy(json.loads(DASHBOARDS[0].read_text()))
    queries = [
        "sum(rate(conduit_made_up_total[$__rate_interval]))",
        'sum(rate(http_requests_total{rout="/api/tags"}[$__rate_interval]))',
        'sum(rate(http_request_duration_seconds_bucket{le="0.25"}[$__rate_interval]))',
    ]
    dashboard["panels"].append(
        {
            "type": "row",
            "title": "Collapsed",
            "collapsed": True,
            "panels": [
                {"title": f"dead {n}", "targets": [{"refId": "A", "expr": expr}]}
                for n, expr in enumerate(queries)
            ],
        }
    )
    problems = dead_references(
        dashboard_expressions(dashboard, "dead.json"),
        exported(scrape),
        PROMETHEUS_SERIES | recorded_names(RULE_FILES),
    )
    dead = [str(p) for p in problems if p.source.startswith("dead.json: panel 'dead ")]
    assert len(dead) == 3, problems
    assert dead[0].endswith("conduit_made_up_total is not exported")
    assert dead[1].endswith("http_requests_total has no label 'rout'")
    assert "http_request_duration_seconds_bucket has no series with le='0.25'" in dead[2]
    assert "0.3" in dead[2], "the message lists the bounds there are"
