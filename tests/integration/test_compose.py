"""docker-compose.production.yml, checked by the real Compose binary (no engine needed for
`config`) and by assertions on the model Compose resolves."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.docker_engine import compose_plugin as compose_binary
from devstack.nginx import placeholders
from tests.integration.conftest import (
    NGINX_CONF,
    ROOT,
    ROUTER_CONF,
    TLS_TEMPLATE,
    UPSTREAM_TEMPLATE,
)

COMPOSE_FILE = ROOT / "docker-compose.production.yml"
SECRET = "0123456789abcdef" * 4


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    path = tmp_path / "test.env"
    path.write_text(
        f"SECRET_KEY={SECRET}\n"
        "POSTGRES_PASSWORD=compose-test-password\n"
        "DATABASE_URL=postgresql+asyncpg://conduit:compose-test-password@postgres:5432/conduit\n"
        "METRICS_TOKEN=compose-test-metrics-token\n"
    )
    return path


def run_compose(env_file: Path, *args: str, extra_env: Mapping[str, str] | None = None) -> Any:
    # Only what the test sets: no stray COMPOSE_*/APP_* from the developer's shell.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(env_file.parent)}
    env.update({"CONDUIT_ENV_FILE": str(env_file), **(extra_env or {})})
    return subprocess.run(
        [str(compose_binary()), "-f", str(COMPOSE_FILE), "--env-file", str(env_file), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def resolved(env_file: Path, **extra_env: str) -> dict[str, Any]:
    """The model Compose resolves, with these variables set in its environment."""
    result = run_compose(env_file, "config", "--format", "json", extra_env=extra_env)
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


@pytest.fixture
def model(env_file: Path) -> dict[str, Any]:
    return resolved(env_file)


def test_config_is_valid(env_file: Path) -> None:
    result = run_compose(env_file, "config", "-q")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("missing", ["SECRET_KEY", "POSTGRES_PASSWORD", "DATABASE_URL"])
def test_required_secrets_are_enforced(env_file: Path, missing: str) -> None:
    lines = [e for e in env_file.read_text().splitlines() if not e.startswith(missing + "=")]
    env_file.write_text("\n".join(lines) + "\n")
    result = run_compose(env_file, "config", "-q")
    assert result.returncode != 0
    assert missing in result.stderr


def test_no_secret_value_is_written_in_the_file() -> None:
    text = COMPOSE_FILE.read_text()
    for name in ("SECRET_KEY", "POSTGRES_PASSWORD", "DATABASE_URL"):
        assert f"${{{name}:?" in text, name
    assert "compose-test" not in text


def test_services_and_healthchecks(model: dict[str, Any]) -> None:
    services = model["services"]
    assert set(services) == {"postgres", "redis", "migrate", "app", "router", "nginx"}
    for name in ("postgres", "redis", "app", "router", "nginx"):
        assert services[name]["healthcheck"]["test"], name
        assert services[name]["restart"] == "unless-stopped", name
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "/health/liveness" in " ".join(services["app"]["healthcheck"]["test"])
    assert services["migrate"]["command"] == ["alembic", "upgrade", "head"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["image"] == services["app"]["image"]


def test_depends_on_conditions(model: dict[str, Any]) -> None:
    services = model["services"]
    app = {name: dep["condition"] for name, dep in services["app"]["depends_on"].items()}
    assert app == {
        "postgres": "service_healthy",
        "redis": "service_healthy",
        "migrate": "service_completed_successfully",
    }
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["router"]["depends_on"]["app"]["condition"] == "service_healthy"
    assert services["nginx"]["depends_on"]["router"]["condition"] == "service_healthy"


def test_networks_isolate_the_data_stores(model: dict[str, Any]) -> None:
    services = model["services"]
    assert model["networks"]["backend"]["internal"] is True
    assert not model["networks"]["edge"].get("internal")
    assert set(services["nginx"]["networks"]) == {"edge"}
    assert set(services["router"]["networks"]) == {"edge"}
    assert set(services["app"]["networks"]) == {"edge", "backend"}
    for name in ("postgres", "redis", "migrate"):
        assert set(services[name]["networks"]) == {"backend"}, name
    # nginx is the only service with published ports.
    published = {name for name, svc in services.items() if svc.get("ports")}
    assert published == {"nginx"}
    assert sorted(p["target"] for p in services["nginx"]["ports"]) == [80, 443]


def test_app_limits_volumes_and_proxy_trust(model: dict[str, Any]) -> None:
    app = model["services"]["app"]
    resources = app["deploy"]["resources"]
    assert resources["limits"]["memory"] == str(1024**3)
    assert float(resources["limits"]["cpus"]) == 0.5
    assert resources["reservations"]["memory"] == str(512 * 1024**2)
    assert float(resources["reservations"]["cpus"]) == 0.25
    env = app["environment"]
    assert env["APP_ENV"] == "production"
    assert env["UPLOAD_DIR"] == "/var/lib/conduit/uploads"
    subnet = model["networks"]["edge"]["ipam"]["config"][0]["subnet"]
    assert env["TRUSTED_PROXIES"] == env["FORWARDED_ALLOW_IPS"] == subnet
    assert env["PROMETHEUS_MULTIPROC_DIR"] in " ".join(app["tmpfs"])
    assert app["read_only"] is True
    mounts = {v["target"]: v for v in app["volumes"]}
    assert mounts["/var/lib/conduit/uploads"]["source"] == "uploads"
    nginx_mounts = {v["target"]: v for v in model["services"]["nginx"]["volumes"]}
    assert nginx_mounts["/var/lib/conduit/uploads"]["source"] == "uploads"
    assert nginx_mounts["/var/lib/conduit/uploads"]["read_only"] is True
    assert "postgres-data" in model["volumes"]


def test_nginx_gets_a_value_for_every_template_placeholder(model: dict[str, Any]) -> None:
    nginx = model["services"]["nginx"]
    env = nginx["environment"]
    needed = placeholders(NGINX_CONF.read_text()) | placeholders(TLS_TEMPLATE.read_text())
    assert needed <= set(env), needed - set(env)
    assert env["NGINX_UPSTREAM"] == "router:8080"
    assert env["NGINX_ENVSUBST_OUTPUT_DIR"] == "/etc/nginx"
    targets = {v["target"]: v["source"] for v in nginx["volumes"]}
    assert Path(targets["/etc/nginx/templates/nginx.conf.template"]) == NGINX_CONF
    assert Path(targets["/etc/nginx/templates/tls/tls.conf.template"]).is_file()


def test_router_gets_a_value_for_every_template_placeholder(model: dict[str, Any]) -> None:
    router = model["services"]["router"]
    env = router["environment"]
    needed = placeholders(ROUTER_CONF.read_text()) | placeholders(UPSTREAM_TEMPLATE.read_text())
    assert needed <= set(env), needed - set(env)
    assert env["NGINX_UPSTREAM"] == "app:8000"
    assert env["NGINX_ENVSUBST_FILTER"] == "^NGINX_"
    targets = {v["target"]: Path(v["source"]) for v in router["volumes"]}
    assert targets["/etc/nginx/templates/nginx.conf.template"] == ROUTER_CONF
    assert targets["/etc/nginx/templates/upstream.conf.template"] == UPSTREAM_TEMPLATE
    # The edge reaches it where it listens; it publishes nothing.
    edge = model["services"]["nginx"]["environment"]["NGINX_UPSTREAM"]
    assert edge == f"router:{env['NGINX_ROUTER_LISTEN']}"
    assert not router.get("ports")


@pytest.mark.parametrize(
    ("setting", "service", "default"),
    [
        ("POSTGRES_IMAGE", "postgres", "postgres:16-alpine"),
        ("REDIS_IMAGE", "redis", "redis:7-alpine"),
        ("NGINX_IMAGE", "nginx", "nginx:1.27-alpine"),
        ("NGINX_IMAGE", "router", "nginx:1.27-alpine"),
    ],
)
def test_every_service_image_can_be_overridden(
    env_file: Path, model: dict[str, Any], setting: str, service: str, default: str
) -> None:
    assert model["services"][service]["image"] == default
    mirror = f"registry.internal/library/{default}"
    assert resolved(env_file, **{setting: mirror})["services"][service]["image"] == mirror


def test_two_app_replicas_by_default_and_a_setting_changes_it(
    env_file: Path, model: dict[str, Any]
) -> None:
    assert model["services"]["app"]["deploy"]["replicas"] == 2
    assert resolved(env_file, APP_REPLICAS="3")["services"]["app"]["deploy"]["replicas"] == 3


def test_health_reports_the_deployed_tag(env_file: Path) -> None:
    app = resolved(env_file, APP_TAG="abc123")["services"]["app"]
    assert app["environment"]["APP_VERSION"] == "abc123"
    assert app["image"] == "conduit-api:abc123"


def test_tls_is_switched_on_by_one_setting(env_file: Path) -> None:
    result = run_compose(
        env_file,
        "config",
        "--format",
        "json",
        extra_env={"NGINX_TLS_TEMPLATE": "./deploy/nginx/tls.conf.template"},
    )
    assert result.returncode == 0, result.stderr
    nginx = json.loads(result.stdout)["services"]["nginx"]
    targets = {v["target"]: v["source"] for v in nginx["volumes"]}
    assert Path(targets["/etc/nginx/templates/tls/tls.conf.template"]) == TLS_TEMPLATE


def test_postgres_takes_both_releases_pools_during_a_rollout(model: dict[str, Any]) -> None:
    """A rollout runs the new release's containers beside the old ones: at worst every pool of
    both is full, and migrations and an operator's psql still need a connection."""
    from app.core.config import Settings

    fields = Settings.model_fields
    per_worker = fields["DB_POOL_SIZE"].default + fields["DB_MAX_OVERFLOW"].default
    app = model["services"]["app"]
    workers = int(app["environment"]["WEB_CONCURRENCY"])
    rollout = 2 * app["deploy"]["replicas"] * workers * per_worker
    command = model["services"]["postgres"]["command"]
    max_connections = int(
        next(c for c in command if c.startswith("max_connections=")).split("=")[1]
    )
    assert rollout + 20 <= max_connections, (rollout, max_connections)


# --- the `monitoring` profile -----------------------------------------------------------------

MONITORING_SERVICES = {"prometheus", "alertmanager", "grafana"}
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA_DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources"
NOBODY = "65534:65534"


def with_monitoring(env_file: Path, **extra_env: str) -> dict[str, Any]:
    result = run_compose(
        env_file, "--profile", "monitoring", "config", "--format", "json", extra_env=extra_env
    )
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


@pytest.fixture
def monitoring(env_file: Path) -> dict[str, Any]:
    return with_monitoring(env_file)


def mounts(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {volume["target"]: volume for volume in service["volumes"]}


def shares_a_network(model: dict[str, Any], first: str, second: str) -> bool:
    services = model["services"]
    return bool(set(services[first]["networks"]) & set(services[second]["networks"]))


def test_the_profile_is_off_unless_asked_for(model: dict[str, Any]) -> None:
    """Without the profile (deploy.sh, a plain `up`) nothing of it is created: no service,
    network, volume or secret; and GRAFANA_ADMIN_PASSWORD (unset in env_file) is not needed."""
    assert not MONITORING_SERVICES & set(model["services"])
    assert set(model["networks"]) == {"edge", "backend"}
    assert set(model["volumes"]) == {"postgres-data", "uploads"}
    assert not model.get("secrets")


def test_the_profile_adds_its_three_services(
    model: dict[str, Any], monitoring: dict[str, Any]
) -> None:
    services = monitoring["services"]
    assert set(services) == set(model["services"]) | MONITORING_SERVICES
    for name in MONITORING_SERVICES:
        service = services[name]
        assert service["profiles"] == ["monitoring"], name
        assert service["restart"] == "unless-stopped", name
        assert service["healthcheck"]["test"], name
        assert not service.get("depends_on", {}).keys() - MONITORING_SERVICES, name
        assert service["user"].split(":")[0] not in ("", "0", "root"), name
        assert {port["host_ip"] for port in service["ports"]} == {"127.0.0.1"}, name
    assert services["prometheus"]["user"] == services["alertmanager"]["user"] == NOBODY
    # None of them is on the data stores' network.
    assert all("backend" not in services[name]["networks"] for name in MONITORING_SERVICES)


@pytest.mark.parametrize(
    ("setting", "service", "default"),
    [
        ("PROMETHEUS_IMAGE", "prometheus", "prom/prometheus:v3.13.2"),
        ("ALERTMANAGER_IMAGE", "alertmanager", "prom/alertmanager:v0.33.1"),
        ("GRAFANA_IMAGE", "grafana", "grafana/grafana:12.4.3"),
    ],
)
def test_every_monitoring_image_can_be_overridden(
    env_file: Path, monitoring: dict[str, Any], setting: str, service: str, default: str
) -> None:
    assert monitoring["services"][service]["image"] == default
    mirror = f"registry.internal/{default}"
    assert with_monitoring(env_file, **{setting: mirror})["services"][service]["image"] == mirror


def test_prometheus_runs_the_committed_config_with_the_token_as_a_secret(
    monitoring: dict[str, Any],
) -> None:
    prometheus = monitoring["services"]["prometheus"]
    volumes = mounts(prometheus)
    assert Path(volumes["/etc/prometheus/prometheus.yml"]["source"]) == PROMETHEUS_CONFIG
    assert Path(volumes["/etc/prometheus/rules"]["source"]) == ROOT / "deploy/prometheus/rules"
    assert volumes["/etc/prometheus/prometheus.yml"]["read_only"] is True
    assert volumes["/etc/prometheus/rules"]["read_only"] is True
    assert volumes["/prometheus"]["source"] == "prometheus-data"
    flags = dict(flag.split("=", 1) for flag in prometheus["command"])
    assert flags["--config.file"] == "/etc/prometheus/prometheus.yml"
    assert flags["--storage.tsdb.path"] == "/prometheus"
    # The error-budget rules read 30 days back.
    assert flags["--storage.tsdb.retention.time"] == "35d"
    assert monitoring["secrets"]["metrics_token"]["environment"] == "METRICS_TOKEN"
    assert prometheus["secrets"] == [
        {"source": "metrics_token", "target": "/run/secrets/metrics_token"}
    ]
    assert "METRICS_TOKEN" not in prometheus.get("environment", {})


def scrape_job(config: dict[str, Any], name: str) -> dict[str, Any]:
    jobs: list[dict[str, Any]] = [
        job for job in config["scrape_configs"] if job["job_name"] == name
    ]
    [job] = jobs
    return job


def test_prometheus_yml_names_what_compose_provides(monitoring: dict[str, Any]) -> None:
    """The scrape job, the token file, the rule files and Alertmanager as prometheus.yml names
    them are what the Compose services mount, publish and resolve."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    services = monitoring["services"]
    prometheus = services["prometheus"]
    job = scrape_job(config, "conduit-api")
    [dns] = job["dns_sd_configs"]
    assert dns["names"] == ["app"]
    assert dns.get("type", "SRV") == "A"
    router_upstream = services["router"]["environment"]["NGINX_UPSTREAM"]
    assert f"app:{dns['port']}" == router_upstream  # the port the app listens on
    assert shares_a_network(monitoring, "prometheus", "app")
    assert job["metrics_path"] == "/health/metrics"
    token_file = job["authorization"]["credentials_file"]
    assert token_file in {secret["target"] for secret in prometheus["secrets"]}
    for pattern in config["rule_files"]:
        directory, glob = pattern.rsplit("/", 1)
        source = Path(mounts(prometheus)[directory]["source"])
        assert list(source.glob(glob)), pattern
    [alerting] = config["alerting"]["alertmanagers"]
    [targets] = alerting["static_configs"]
    assert targets["targets"] == ["alertmanager:9093"]
    assert {port["target"] for port in services["alertmanager"]["ports"]} == {9093}
    assert shares_a_network(monitoring, "prometheus", "alertmanager")


def test_alertmanager_runs_the_committed_config(monitoring: dict[str, Any]) -> None:
    alertmanager = monitoring["services"]["alertmanager"]
    volumes = mounts(alertmanager)
    config = volumes["/etc/alertmanager/alertmanager.yml"]
    assert Path(config["source"]) == ROOT / "deploy/prometheus/alertmanager.yml"
    assert config["read_only"] is True
    flags = dict(flag.split("=", 1) for flag in alertmanager["command"])
    assert flags["--config.file"] == "/etc/alertmanager/alertmanager.yml"
    assert volumes[flags["--storage.path"]]["source"] == "alertmanager-data"


def test_grafana_has_no_default_password_and_no_anonymous_access(
    monitoring: dict[str, Any],
) -> None:
    grafana = monitoring["services"]["grafana"]
    env = grafana["environment"]
    # `$$` is Compose's escape: Grafana itself expands $__file{} and fails on a missing file.
    password = env["GF_SECURITY_ADMIN_PASSWORD"].replace("$$", "$")
    target = "/run/secrets/grafana_admin_password"
    assert password == f"$__file{{{target}}}"
    assert {"source": "grafana_admin_password", "target": target} in grafana["secrets"]
    assert monitoring["secrets"]["grafana_admin_password"]["environment"] == (
        "GRAFANA_ADMIN_PASSWORD"
    )
    assert not any(name.endswith("__FILE") for name in env)
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"


def test_grafana_is_provisioned_from_the_repository(monitoring: dict[str, Any]) -> None:
    grafana = monitoring["services"]["grafana"]
    volumes = mounts(grafana)
    provisioning = volumes["/etc/grafana/provisioning"]
    dashboards = volumes["/var/lib/grafana/dashboards"]
    assert Path(provisioning["source"]) == ROOT / "deploy/grafana/provisioning"
    assert Path(dashboards["source"]) == ROOT / "deploy/grafana/dashboards"
    assert provisioning["read_only"] is dashboards["read_only"] is True
    assert volumes["/var/lib/grafana"]["source"] == "grafana-data"
    urls = [
        source["url"]
        for path in sorted(GRAFANA_DATASOURCES.glob("*.yml"))
        for source in yaml.safe_load(path.read_text())["datasources"]
        if source["type"] == "prometheus"
    ]
    assert urls == ["http://prometheus:9090"]
    assert shares_a_network(monitoring, "grafana", "prometheus")
