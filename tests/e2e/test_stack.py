"""The deployed stack, checked through nginx as a client sees it and through Docker as an
operator does: the API works, uploads and their limit, request ids, the app container's user
and health, and the data stores' isolation."""

from __future__ import annotations

import contextlib
import time
import uuid

import httpx
import pytest

from tests.e2e.stack import Stack
from tests.support.images import noise_image

pytestmark = pytest.mark.e2e

MB = 1024 * 1024
APP_USER = "10001"


@pytest.fixture(scope="module")
def client(stack: Stack) -> httpx.Client:
    return httpx.Client(base_url=stack.base_url, timeout=30)


@pytest.fixture(scope="module")
def token(client: httpx.Client) -> str:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    response = client.post(
        "/api/users",
        json={"user": {"username": name, "email": f"{name}@example.org", "password": "pa55-w0rd!"}},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["user"]["token"])


def test_register_create_and_read_through_nginx(client: httpx.Client, token: str) -> None:
    auth = {"Authorization": f"Token {token}"}
    article = {"title": f"Deployed {uuid.uuid4().hex[:6]}", "description": "d", "body": "b"}
    created = client.post("/api/articles", json={"article": article}, headers=auth)
    assert created.status_code == 201, created.text
    slug = created.json()["article"]["slug"]
    read = client.get(f"/api/articles/{slug}")
    assert read.status_code == 200
    assert read.json()["article"]["title"] == article["title"]
    listed = client.get("/api/articles", params={"limit": 5})
    assert slug in {item["slug"] for item in listed.json()["articles"]}


def png_of(size: int) -> bytes:
    """A real PNG of about `size` bytes (random pixels, uncompressed, no metadata: the app
    stores it byte for byte; it refuses bytes that are not a well-formed image)."""
    side = int((size / 3) ** 0.5)
    return noise_image("PNG", (side, side), compress_level=0)


def test_a_9_mb_image_is_stored_and_served_by_nginx(client: httpx.Client, token: str) -> None:
    image = png_of(9 * MB)
    response = client.post(
        "/api/uploads",
        files={"file": ("photo.png", image, "image/png")},
        headers={"Authorization": f"Token {token}"},
    )
    assert response.status_code == 201, response.text
    url = response.json()["url"]
    served = client.get(url)
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/png"
    assert served.headers["content-security-policy"] == "default-src 'none'; sandbox"
    assert served.headers["content-disposition"] == f'inline; filename="{url.rsplit("/", 1)[1]}"'
    assert served.content == image


def test_an_11_mb_image_gets_the_413_envelope(client: httpx.Client, token: str) -> None:
    response = client.post(
        "/api/uploads",
        files={"file": ("big.png", png_of(11 * MB), "image/png")},
        headers={"Authorization": f"Token {token}", "X-Request-ID": "e2e-too-large"},
    )
    assert response.status_code == 413
    body = response.json()
    assert body["code"] == "payload_too_large"
    assert body["errors"]["body"]
    assert body["request_id"] == "e2e-too-large"


def test_the_request_id_passes_through_to_the_app(stack: Stack, client: httpx.Client) -> None:
    request_id = f"e2e-{uuid.uuid4().hex}"
    response = client.get("/api/tags", headers={"X-Request-ID": request_id})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == request_id
    logs = "".join(
        stack.engine.docker("logs", container.id) for container in stack.app_containers()
    )
    assert f'"request_id":"{request_id}"' in logs.replace(" ", "")


def test_app_containers_run_as_non_root_and_are_healthy(stack: Stack) -> None:
    containers = stack.app_containers()
    assert len(containers) == 2
    for container in containers:
        assert container.user == f"{APP_USER}:{APP_USER}"
        assert stack.engine.docker("exec", container.id, "id", "-u").strip() == APP_USER
        assert container.health == "healthy"


@pytest.mark.parametrize("service", ["postgres", "redis"])
def test_data_stores_are_not_reachable_from_the_host(stack: Stack, service: str) -> None:
    info = stack.service_container(service)
    published = {port: bound for port, bound in info["NetworkSettings"]["Ports"].items() if bound}
    assert published == {}
    networks = set(info["NetworkSettings"]["Networks"])
    assert networks == {"conduit-production_backend"}
    backend = stack.inspect_network("conduit-production_backend")
    assert backend["Internal"] is True
    # Only the app (and the one-shot migrator) share that network; nginx does not.
    nginx = stack.service_container("nginx")
    assert "conduit-production_backend" not in nginx["NetworkSettings"]["Networks"]


def test_status_names_every_container_and_the_deployed_tag(stack: Stack) -> None:
    run = stack.deploy("status", label="status")
    assert run.returncode == 0, run.output
    serving = stack.app_containers()
    for container in serving:
        assert f"app container {container.name}: conduit-api:{container.tag}" in run.output
    assert f"deployed: {serving[0].tag};" in run.output
    assert "readiness: ok" in run.output


def test_a_tag_already_on_the_host_deploys_without_a_build(stack: Stack) -> None:
    """`--no-build` (images from a registry): the serving tag rolled out again, nothing built."""
    [tag] = {container.tag for container in stack.app_containers()}
    stack.git("checkout", "--quiet", tag)  # the checkout of the tag that serves
    before = {container.id for container in stack.app_containers()}
    run = stack.deploy("production", "--no-build", label="no-build", IMAGE_TAG=tag)
    assert run.returncode == 0, run.output[-4000:]
    assert f"step 1/6: conduit-api:{tag} is already on this host" in run.output
    assert "step 1/6: build" not in run.output
    # After the rollback past a migration (test_deploy.py), the database is ahead of this release.
    revision = stack.psql("SELECT version_num FROM alembic_version")
    known = any(revision in path.name for path in (stack.workdir / "alembic/versions").iterdir())
    assert ("the database is at a revision" in run.output) is not known
    after = stack.app_containers()
    assert {container.tag for container in after} == {tag}
    assert not before & {container.id for container in after}  # new containers, same image


def test_the_edge_finds_a_recreated_router(stack: Stack, client: httpx.Client) -> None:
    """The router recreated (a change to router.conf): the edge, never restarted, looks its
    address up again through Docker's DNS and serves within its 10 s cache."""
    stack.compose("up", "--detach", "--no-deps", "--force-recreate", "router")
    deadline = time.monotonic() + 30
    status = 0
    while time.monotonic() < deadline and status != 200:
        with contextlib.suppress(httpx.HTTPError):
            status = client.get("/health/readiness").status_code
        time.sleep(0.5)
    assert status == 200
