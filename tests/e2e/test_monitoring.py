"""The `monitoring` Compose profile beside the deployed stack, started as an operator starts it.

Prometheus (the stand-in from Debian's package) and Alertmanager run the committed
deploy/prometheus/ configuration unchanged. A release is deployed while they run and while
clients read through nginx; then Prometheus's HTTP API, on the port Compose publishes on
127.0.0.1 (where an operator's SSH tunnel ends), must show every app container of the new
release scraped with the metrics token, every rule group loaded and evaluated, the availability
SLI recorded, and Alertmanager found. Grafana has no Debian package and is not started here.

Prometheus finds the app containers through Docker's DNS (`app` on the edge network) and looks
the name up again every 10 s, so the checks poll until the new release's containers are the
targets; the slowest rule group is evaluated once a minute.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from tests.e2e.stack import PROJECT, DeployRun, Stack

pytestmark = pytest.mark.e2e

MONITORING = ("--profile", "monitoring")
SERVICES = ("prometheus", "alertmanager")
JOB = "conduit-api"
APP_PORT = 8000
EDGE_NETWORK = f"{PROJECT}_edge"
# DNS refresh (10 s) + two scrapes (15 s) after the deploy, and the 1 min rule group, with margin.
DEADLINE_SECONDS = 150.0
AVAILABILITY_SLI = "slo:availability:error_ratio:rate5m"
NEVER = "0001-01-01T00:00:00Z"  # Prometheus's lastEvaluation of a group not evaluated yet
NOBODY = "65534:65534"

T = TypeVar("T")


class Traffic:
    """Clients reading through nginx in a background thread, so the SLI has requests to count."""

    def __init__(self, base_url: str) -> None:
        self._client = httpx.Client(base_url=base_url, timeout=5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="monitoring-traffic", daemon=True)
        self.sent = 0

    def _run(self) -> None:
        paths = ("/api/tags", "/api/articles?limit=5")
        while not self._stop.is_set():
            for path in paths:
                try:
                    self._client.get(path)
                    self.sent += 1
                except httpx.HTTPError:
                    pass  # a deploy fails no request (test_deploy.py); the SLI is the point here
            self._stop.wait(0.05)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._client.close()


@dataclass(frozen=True)
class Monitoring:
    prometheus: httpx.Client
    started: dict[str, dict[str, Any]]  # service -> its container, inspected after `up`
    deploy: DeployRun
    traffic: Traffic

    def api(self, path: str, **params: str) -> Any:
        response = self.prometheus.get(path, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]


def service_containers(stack: Stack) -> dict[str, dict[str, Any]]:
    found = {}
    for service in SERVICES:
        [container_id] = stack.compose(*MONITORING, "ps", "--quiet", service).split()
        found[service] = stack.inspect(container_id)
    return found


@pytest.fixture(scope="module")
def monitoring(stack: Stack) -> Iterator[Monitoring]:
    """Prometheus and Alertmanager up and healthy, then a release deployed beside them."""
    stack.compose(*MONITORING, "up", "--detach", "--wait", *SERVICES)
    try:
        started = service_containers(stack)
        with (
            Traffic(stack.base_url) as traffic,
            httpx.Client(base_url=stack.prometheus_url, timeout=10) as prometheus,
        ):
            [tag] = {container.tag for container in stack.app_containers()}
            run = stack.deploy(
                "production", "--no-build", label="deploy-beside-monitoring", IMAGE_TAG=tag
            )
            yield Monitoring(prometheus, started, run, traffic)
    finally:
        logs = stack.compose(
            *MONITORING, "logs", "--no-color", "--timestamps", *SERVICES, check=False
        )
        stack.logs.mkdir(parents=True, exist_ok=True)
        (stack.logs / "monitoring.log").write_text(logs)
        stack.compose(*MONITORING, "rm", "--stop", "--force", *SERVICES, check=False)
        volumes = [f"{PROJECT}_{name}-data" for name in ("prometheus", "alertmanager", "grafana")]
        stack.engine.docker("volume", "rm", *volumes, check=False)


def eventually(check: Callable[[], T], timeout: float = DEADLINE_SECONDS) -> T:
    """check() once it stops failing its assertions; its last failure after the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except (AssertionError, httpx.HTTPError):
            if time.monotonic() > deadline:
                raise
        time.sleep(1)


def app_instances(stack: Stack) -> set[str]:
    """host:port of every running app container on the edge network, as Prometheus labels it."""
    instances = set()
    for container in stack.app_containers():
        address = stack.inspect(container.id)["NetworkSettings"]["Networks"][EDGE_NETWORK]
        instances.add(f"{address['IPAddress']}:{APP_PORT}")
    return instances


def test_a_deploy_leaves_the_monitoring_services_alone(
    stack: Stack, monitoring: Monitoring
) -> None:
    assert monitoring.deploy.returncode == 0, monitoring.deploy.output[-4000:]
    assert "orphan" not in monitoring.deploy.output.lower()
    after = service_containers(stack)
    for service, before in monitoring.started.items():
        now = after[service]
        assert now["Id"] == before["Id"], f"{service} was recreated by the deploy"
        assert now["State"]["Running"], service
        assert now["State"]["StartedAt"] == before["State"]["StartedAt"], service
        assert now["RestartCount"] == 0, service


def test_they_run_as_nobody_and_listen_on_loopback_only(
    stack: Stack, monitoring: Monitoring
) -> None:
    for service, info in monitoring.started.items():
        assert info["Config"]["User"] == NOBODY, service
        assert stack.engine.docker("exec", info["Id"], "id", "-u").strip() == "65534", service
        bindings = [b for bound in info["HostConfig"]["PortBindings"].values() for b in bound]
        assert bindings, service
        assert {binding["HostIp"] for binding in bindings} == {"127.0.0.1"}, service
    prometheus = monitoring.started["prometheus"]
    networks = set(prometheus["NetworkSettings"]["Networks"])
    assert networks == {EDGE_NETWORK, f"{PROJECT}_monitoring"}
    assert set(monitoring.started["alertmanager"]["NetworkSettings"]["Networks"]) == {
        f"{PROJECT}_monitoring"
    }


def test_the_metrics_token_is_a_secret_file_not_an_environment_variable(
    stack: Stack, monitoring: Monitoring
) -> None:
    token = next(
        line.split("=", 1)[1]
        for line in (stack.workdir / ".env").read_text().splitlines()
        if line.startswith("METRICS_TOKEN=")
    )
    prometheus = monitoring.started["prometheus"]
    assert token not in json.dumps(prometheus)  # not in its environment, command or labels
    in_file = stack.engine.docker("exec", prometheus["Id"], "cat", "/run/secrets/metrics_token")
    assert in_file.strip() == token


def test_every_app_container_is_scraped_with_the_token(
    stack: Stack, monitoring: Monitoring
) -> None:
    def scraped() -> set[str]:
        expected = app_instances(stack)
        assert len(expected) == 2
        targets = [
            target
            for target in monitoring.api("/api/v1/targets", state="active")["activeTargets"]
            if target["labels"]["job"] == JOB
        ]
        seen = {target["labels"]["instance"]: target for target in targets}
        assert set(seen) == expected, (sorted(seen), sorted(expected))
        for instance, target in seen.items():
            # Without the token the app answers 401 and the target is down with that error.
            assert target["health"] == "up", (instance, target["lastError"])
            assert target["scrapeUrl"].endswith("/health/metrics"), target["scrapeUrl"]
        up = monitoring.api("/api/v1/query", query=f'up{{job="{JOB}"}}')["result"]
        values = {sample["metric"]["instance"]: sample["value"][1] for sample in up}
        assert values == dict.fromkeys(expected, "1"), values
        return expected

    instances = eventually(scraped)
    # The new release's containers: the deploy replaced every container Prometheus saw first.
    assert instances == app_instances(stack)


def rule_groups_in_the_repository(stack: Stack) -> dict[str, int]:
    """Group name -> number of rules, from the checkout's deploy/prometheus/rules/*.yml."""
    groups: dict[str, int] = {}
    for path in sorted((stack.workdir / "deploy/prometheus/rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            groups[group["name"]] = len(group["rules"])
    return groups


def test_every_rule_group_is_loaded_and_evaluated(stack: Stack, monitoring: Monitoring) -> None:
    expected = rule_groups_in_the_repository(stack)
    assert expected

    def evaluated() -> None:
        groups = monitoring.api("/api/v1/rules")["groups"]
        assert {group["name"]: len(group["rules"]) for group in groups} == expected
        for group in groups:
            assert Path(group["file"]).parent == Path("/etc/prometheus/rules"), group["file"]
            assert group["lastEvaluation"] != NEVER, f"{group['name']} not evaluated yet"
            for rule in group["rules"]:
                assert rule["health"] == "ok", (group["name"], rule["name"], rule.get("lastError"))

    eventually(evaluated)


def test_the_availability_sli_is_recorded_from_the_traffic(monitoring: Monitoring) -> None:
    def recorded() -> float:
        result = monitoring.api("/api/v1/query", query=AVAILABILITY_SLI)["result"]
        assert len(result) == 1, result
        assert result[0]["metric"]["job"] == JOB
        return float(result[0]["value"][1])

    ratio = eventually(recorded)
    assert monitoring.traffic.sent > 0
    assert not math.isnan(ratio)
    assert 0 <= ratio <= 1, ratio


def test_prometheus_sends_its_alerts_to_alertmanager(monitoring: Monitoring) -> None:
    def found() -> None:
        active = monitoring.api("/api/v1/alertmanagers")["activeAlertmanagers"]
        urls = [alertmanager["url"] for alertmanager in active]
        assert any(":9093/api/v2/alerts" in url for url in urls), urls

    eventually(found)
