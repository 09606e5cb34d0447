"""deploy/k8s manifests: schema-validated offline (kubernetes-validate, strict) and checked
against the app itself: probe paths are the health router's routes, ports and UID are the
Dockerfile's, settings are fields the app knows, shutdown timings fit inside the grace period."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from app.api import health
from app.core.config import Settings
from tests.integration.conftest import ROOT, dockerfile_cmd, runtime_env, stages

K8S = ROOT / "deploy" / "k8s"
VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
# Read by uvicorn or prometheus_client rather than by Settings.
NON_SETTINGS = {
    "FORWARDED_ALLOW_IPS",
    "UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN",
    "PROMETHEUS_MULTIPROC_DIR",
}
POSTGRES_MAX_CONNECTIONS = 300  # docker-compose.production.yml's default, DEPLOYMENT.md's sizing


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def load(name: str) -> dict[str, Any]:
    document = yaml.safe_load((K8S / name).read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def deployment() -> dict[str, Any]:
    return load("deployment.yaml")


@pytest.fixture(scope="module")
def container(deployment: dict[str, Any]) -> dict[str, Any]:
    [api] = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(api, dict)
    return api


@pytest.fixture(scope="module")
def config() -> dict[str, str]:
    data = load("configmap.yaml")["data"]
    assert isinstance(data, dict)
    return {str(k): str(v) for k, v in data.items()}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_manifest_validates_strictly(path: Path, version: str) -> None:
    for document in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(document, version, strict=True)


def test_validator_rejects_a_broken_manifest(deployment: dict[str, Any]) -> None:
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eight"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[0], strict=True)
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["terminationGracePeriod"] = 45
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[0], strict=True)


def test_kustomization_lists_every_long_lived_manifest() -> None:
    resources = set(load("kustomization.yaml")["resources"])
    per_release = {"migration-job.yaml", "secret.example.yaml"}
    assert resources | per_release == {p.name for p in manifest_files()}
    assert not resources & per_release


def test_probes_hit_the_apps_health_routes_on_the_image_port(container: dict[str, Any]) -> None:
    routes = {getattr(route, "path", None) for route in health.router.routes}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    cmd = dockerfile_cmd()
    image_port = int(cmd[cmd.index("--port") + 1])
    assert dict(stages()[-1])["EXPOSE"] == str(image_port)
    expected = {
        "startupProbe": "/health/liveness",
        "livenessProbe": "/health/liveness",
        "readinessProbe": "/health/readiness",
    }
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert path in routes
        assert ports.get(get["port"], get["port"]) == image_port


def test_security_context_matches_the_image_user(deployment: dict[str, Any]) -> None:
    [user] = [rest for keyword, rest in stages()[-1] if keyword == "USER"]
    uid, gid = (int(part) for part in user.split(":"))
    for manifest in (deployment, load("migration-job.yaml")):
        pod = manifest["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == uid
        assert pod["securityContext"]["runAsGroup"] == gid
        for item in pod["containers"]:
            assert item["securityContext"]["readOnlyRootFilesystem"] is True
            assert item["securityContext"]["allowPrivilegeEscalation"] is False


def test_writable_paths_are_empty_dirs(
    deployment: dict[str, Any], container: dict[str, Any], config: dict[str, str]
) -> None:
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    metrics_dir = config["PROMETHEUS_MULTIPROC_DIR"]
    assert metrics_dir == runtime_env()["PROMETHEUS_MULTIPROC_DIR"]
    for path in ("/tmp", metrics_dir):
        assert "emptyDir" in volumes[mounts[path]], path
    assert mounts[config["UPLOAD_DIR"]] == "uploads"


def test_one_process_per_pod_and_documented_resources(
    container: dict[str, Any], config: dict[str, str]
) -> None:
    assert config["WEB_CONCURRENCY"] == "1"
    resources = container["resources"]
    assert resources["requests"] == {"cpu": "250m", "memory": "512Mi"}
    assert resources["limits"]["memory"] == "1Gi"
    cpu = resources["limits"]["cpu"]
    millis = int(cpu[:-1]) if cpu.endswith("m") else int(float(cpu) * 1000)
    assert 500 <= millis <= 1000


def test_grace_period_outlasts_prestop_drain_and_grace(
    deployment: dict[str, Any], container: dict[str, Any], config: dict[str, str]
) -> None:
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    drain = float(config["SHUTDOWN_DRAIN_SECONDS"])
    grace = float(config["SHUTDOWN_GRACE_SECONDS"])
    period = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert period > pre_stop + drain + grace
    assert float(config["UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN"]) >= grace
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_configmap_holds_settings_the_app_accepts_in_production(config: dict[str, str]) -> None:
    unknown = set(config) - set(Settings.model_fields) - NON_SETTINGS
    assert not unknown
    secret = "9f2b7c41d0e8a3b5c6d7e8f90a1b2c3d4e5f60718293a4b5"
    settings = Settings(_env_file=None, **config, SECRET_KEY=secret)  # type: ignore[arg-type]
    assert settings.is_production
    assert settings.WEB_CONCURRENCY == 1


def test_secret_example_is_refused_by_the_app() -> None:
    secret = load("secret.example.yaml")
    values = secret["stringData"]
    assert set(values) >= {"SECRET_KEY", "DATABASE_URL", "METRICS_TOKEN"}
    assert "EXAMPLE ONLY" in (K8S / "secret.example.yaml").read_text()
    with pytest.raises(ValidationError, match="placeholder"):
        Settings(_env_file=None, APP_ENV="production", SECRET_KEY=values["SECRET_KEY"])
    assert "change-this" in values["DATABASE_URL"]


def test_service_pdb_and_hpa_point_at_the_deployment(deployment: dict[str, Any]) -> None:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service, pdb, hpa = load("service.yaml"), load("pdb.yaml"), load("hpa.yaml")
    for selector in (service["spec"]["selector"], pdb["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    port_names = {
        p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert service["spec"]["ports"][0]["targetPort"] in port_names
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]


def test_pool_sizing_fits_postgres(config: dict[str, str]) -> None:
    hpa = load("hpa.yaml")
    per_pod = int(config["WEB_CONCURRENCY"]) * (
        int(config["DB_POOL_SIZE"]) + int(config["DB_MAX_OVERFLOW"])
    )
    assert hpa["spec"]["maxReplicas"] * per_pod < POSTGRES_MAX_CONNECTIONS


def test_ingress_exposes_public_routes_only() -> None:
    ingress = load("ingress.yaml")
    paths = {p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]}
    assert paths == {"/api", "/uploads", "/health/liveness", "/health/readiness"}
    assert not any(re.search(r"detailed|metrics", path) for path in paths)
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "10304k"


def test_migration_job_runs_alembic_with_the_app_image(container: dict[str, Any]) -> None:
    job = load("migration-job.yaml")
    [migrate] = job["spec"]["template"]["spec"]["containers"]
    assert migrate["command"] == ["alembic", "upgrade", "head"]
    assert migrate["image"] == container["image"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


# --- the s3 overlay (deploy/k8s-overlays/s3): rendered by kustomize, validated like the base ---

OVERLAY = ROOT / "deploy" / "k8s-overlays" / "s3"


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize DIR`'s documents (kustomize is built into kubectl)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (Debian package kubernetes-client)")
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def overlay() -> list[dict[str, Any]]:
    return kustomize(OVERLAY)


def only(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [document] = [doc for doc in documents if doc["kind"] == kind]
    return document


@pytest.mark.parametrize("version", VERSIONS)
def test_s3_overlay_renders_and_validates_strictly(
    overlay: list[dict[str, Any]], version: str
) -> None:
    for document in [*overlay, *yaml.safe_load_all((OVERLAY / "secret.example.yaml").read_text())]:
        kubernetes_validate.validate(document, version, strict=True)


def test_s3_overlay_is_the_base_without_a_shared_volume(overlay: list[dict[str, Any]]) -> None:
    base = kustomize(K8S)
    kinds = {doc["kind"] for doc in overlay}
    assert kinds == {doc["kind"] for doc in base} - {"PersistentVolumeClaim"}
    assert "PersistentVolumeClaim" in {doc["kind"] for doc in base}
    pod = only(overlay, "Deployment")["spec"]["template"]["spec"]
    assert all("emptyDir" in volume for volume in pod["volumes"]), pod["volumes"]
    assert "persistentVolumeClaim" not in str(overlay)
    base_pod = only(base, "Deployment")["spec"]["template"]["spec"]
    # Nothing else of the pod changes: same containers, probes, security context.
    assert pod["containers"] == base_pod["containers"]
    assert pod["securityContext"] == base_pod["securityContext"]


def test_s3_overlay_settings_start_the_app_only_with_the_secrets_keys(
    overlay: list[dict[str, Any]],
) -> None:
    config = {str(k): str(v) for k, v in only(overlay, "ConfigMap")["data"].items()}
    assert config["UPLOAD_STORAGE"] == "s3"
    assert not set(config) - set(Settings.model_fields) - NON_SETTINGS
    secret_keys = yaml.safe_load((OVERLAY / "secret.example.yaml").read_text())["stringData"]
    keys = {name: secret_keys[name] for name in ("S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY")}
    strong = "9f2b7c41d0e8a3b5c6d7e8f90a1b2c3d4e5f60718293a4b5"
    settings = Settings(_env_file=None, **config, **keys, SECRET_KEY=strong)  # type: ignore[arg-type]
    assert settings.UPLOAD_STORAGE == "s3"
    assert settings.S3_PUBLIC_BASE_URL
    with pytest.raises(ValidationError, match="S3_SECRET_ACCESS_KEY is required"):
        Settings(_env_file=None, **config, SECRET_KEY=strong)  # type: ignore[arg-type]
    # The keys live in the Secret, never in the ConfigMap.
    assert not {"S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"} & set(config)
