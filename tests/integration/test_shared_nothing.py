"""Shared-nothing proof: two app processes behind one real nginx, sharing only Postgres, Redis
and the object store (moto's S3 emulator). Each has a scratch UPLOAD_DIR of its own.

The chain is the production one: the project's nginx.conf (the edge, with /media/ served from the
bucket by deploy/nginx/s3-media.conf.template) in front of deploy/nginx/router.conf, which
balances over the two uvicorn processes. Requests that must land on a given instance go to it
directly; the rest go through nginx and are seen spread over both.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from PIL import Image

from app.services.articles import public_article_key
from devstack.nginx import render_template
from devstack.s3 import ACCESS_KEY_ID, SECRET_ACCESS_KEY, MotoS3Server
from devstack.servers import PostgresServer, RedisServer, free_port
from tests.integration.conftest import ROOT, NginxServer, RouterServer, make_dir
from tests.support.databases import fresh_database
from tests.support.live import LiveServer

pytestmark = pytest.mark.slow

MEDIA_TEMPLATE = ROOT / "deploy" / "nginx" / "s3-media.conf.template"
# A Redis database of its own: other tests flush database 0 of the session's server.
REDIS_DB = 7
PASSWORD = "correct-horse-battery"


@dataclass
class Stack:
    first: LiveServer
    second: LiveServer
    edge: NginxServer
    s3: MotoS3Server
    bucket: str
    redis: redis.Redis

    @property
    def instances(self) -> tuple[LiveServer, LiveServer]:
        return self.first, self.second


@pytest.fixture(scope="module")
def stack(
    postgres: PostgresServer,
    redis_server: RedisServer,
    s3_server: MotoS3Server,
    base_env: dict[str, str],
    workdir: Path,
) -> Iterator[Stack]:
    redis_url = f"redis://127.0.0.1:{redis_server.port}/{REDIS_DB}"
    shared_redis = redis.Redis.from_url(redis_url)
    shared_redis.flushdb()
    bucket = f"shared-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(bucket)
    s3_server.allow_public_reads(bucket)

    ports = [free_port(), free_port()]
    router = RouterServer(make_dir(workdir, "router-"), [f"127.0.0.1:{p}" for p in ports])
    edge = NginxServer(make_dir(workdir, "edge-"), router.address)
    media = edge.dir / "media"
    media.mkdir()
    media.chmod(0o755)
    origin = {"NGINX_S3_ORIGIN": f"{s3_server.url}/{bucket}"}
    (media / "media.conf").write_text(render_template(MEDIA_TEMPLATE.read_text(), origin))

    env = {
        **base_env,
        "DATABASE_URL": fresh_database(postgres),
        "REDIS_URL": redis_url,
        "UPLOAD_STORAGE": "s3",
        "S3_ENDPOINT_URL": s3_server.url,
        "S3_BUCKET": bucket,
        "S3_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "S3_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "S3_PUBLIC_BASE_URL": f"{edge.url}/media",
        "TRUSTED_PROXIES": "127.0.0.1",
        "RATE_LIMIT_ENABLED": "true",
        "RATE_LIMIT_DEFAULT": "1000/minute",
        "RATE_LIMIT_WRITE": "1000/minute",
        "RATE_LIMIT_REGISTER": "1000/minute",
        "RATE_LIMIT_LOGIN": "3/minute",
    }
    servers = [
        LiveServer({**env, "UPLOAD_DIR": str(make_dir(workdir, f"scratch-{n}-"))}, port=port)
        for n, port in enumerate(ports)
    ]
    try:
        for server in servers:
            server.start(timeout=60)
        router.start()
        edge.start()
        yield Stack(servers[0], servers[1], edge, s3_server, bucket, shared_redis)
    finally:
        edge.stop()
        router.stop()
        for server in servers:
            server.stop()
        shared_redis.flushdb()
        shared_redis.close()


def register(server: LiveServer) -> dict[str, str]:
    name = f"sn{uuid.uuid4().hex[:10]}"
    user = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
    response = httpx.post(server.url + "/api/users", json={"user": user}, timeout=30)
    assert response.status_code == 201, response.text
    value: dict[str, str] = response.json()["user"]
    return value


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Token {token}"}


def served_by(server: LiveServer, method: str, path: str) -> int:
    """Requests `server` logged (its access log line) for this method and path."""
    return sum(
        1
        for line in server.json_lines()
        if line.get("event") == "request_completed"
        and line.get("method") == method
        and line.get("path") == path
    )


def logged_counts(stack: Stack, path: str, at_least: int) -> list[int]:
    """GETs of `path` each instance logged, once `at_least` lines in all have been read (the
    access log line is written as the response is sent, and read by a thread)."""
    deadline = time.monotonic() + 5
    while True:
        counts = [served_by(server, "GET", path) for server in stack.instances]
        if sum(counts) >= at_least or time.monotonic() > deadline:
            return counts
        time.sleep(0.02)


def png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (5, 5), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_token_from_one_instance_works_on_the_other_and_through_nginx(stack: Stack) -> None:
    user = register(stack.first)
    on_second = httpx.get(stack.second.url + "/api/user", headers=auth(user["token"]))
    assert on_second.status_code == 200, on_second.text
    assert on_second.json()["user"]["username"] == user["username"]

    before = logged_counts(stack, "/api/user", at_least=1)
    with httpx.Client(base_url=stack.edge.url) as http:
        for _ in range(8):
            response = http.get("/api/user", headers=auth(user["token"]))
            assert response.status_code == 200, response.text
    after = logged_counts(stack, "/api/user", at_least=sum(before) + 8)
    spread = [later - earlier for earlier, later in zip(before, after, strict=True)]
    assert sum(spread) == 8
    assert all(count > 0 for count in spread), spread


def test_an_upload_through_one_is_served_by_the_other(stack: Stack) -> None:
    user = register(stack.first)
    data = png((12, 34, 56))
    uploaded = httpx.post(
        stack.first.url + "/api/uploads",
        files={"file": ("me.png", data)},
        headers=auth(user["token"]),
        timeout=30,
    )
    assert uploaded.status_code == 201, uploaded.text
    url = uploaded.json()["url"]
    key = url.rsplit("/", 1)[1]
    assert url == f"{stack.edge.url}/media/{key}"
    assert stack.s3.keys(stack.bucket).count(key) == 1

    # The other instance serves it (its own /uploads route reads the bucket, not a disk)...
    from_second = httpx.get(f"{stack.second.url}/uploads/{key}")
    assert from_second.status_code == 200
    assert from_second.content == data
    # ...and so does the URL the client was given, through nginx, with nosniff.
    public = httpx.get(url)
    assert public.status_code == 200
    assert public.content == data
    assert public.headers["x-content-type-options"] == "nosniff"
    assert public.headers["content-type"] == "image/png"
    # Nothing stayed on either instance's disk.
    for server in stack.instances:
        scratch = Path(server.env["UPLOAD_DIR"])
        leftovers = [p for p in scratch.rglob("*") if p.is_file()]
        assert leftovers == [], leftovers

    # Uploaded again through the other instance: the same object, not a second PUT.
    again = httpx.post(
        stack.second.url + "/api/uploads",
        files={"file": ("again.png", data)},
        headers=auth(user["token"]),
        timeout=30,
    )
    assert again.json() == uploaded.json()
    assert len(stack.s3.requests("PUT", f"/{stack.bucket}/{key}")) == 1


def test_the_rate_limit_is_shared(stack: Stack) -> None:
    user = register(stack.first)
    login = {"user": {"email": user["email"], "password": PASSWORD}}
    statuses = []
    for n in range(4):
        server = stack.instances[n % 2]
        response = httpx.post(server.url + "/api/users/login", json=login, timeout=30)
        statuses.append(response.status_code)
    # Three logins a minute per client, counted across both instances.
    assert statuses == [200, 200, 200, 429]
    refused = httpx.post(stack.first.url + "/api/users/login", json=login, timeout=30)
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"


def test_a_cache_invalidation_by_one_is_seen_by_the_other(stack: Stack) -> None:
    author = register(stack.first)
    tag = f"tag{uuid.uuid4().hex[:8]}"
    article = {"title": f"Shared {uuid.uuid4().hex[:8]}", "description": "d", "body": "first"}
    created = httpx.post(
        stack.first.url + "/api/articles",
        json={"article": {**article, "tagList": [tag]}},
        headers=auth(author["token"]),
        timeout=30,
    )
    assert created.status_code == 201, created.text
    slug = created.json()["article"]["slug"]

    # The second instance reads the article and fills the shared cache.
    first_read = httpx.get(f"{stack.second.url}/api/articles/{slug}")
    assert first_read.json()["article"]["body"] == "first"
    assert stack.redis.exists(public_article_key(slug)) == 1
    tags_before = httpx.get(stack.second.url + "/api/tags").json()["tags"]

    # The first instance changes it and adds a tag...
    updated = httpx.put(
        f"{stack.first.url}/api/articles/{slug}",
        json={"article": {"body": "second"}},
        headers=auth(author["token"]),
        timeout=30,
    )
    assert updated.status_code == 200, updated.text
    new_tag = f"new{uuid.uuid4().hex[:8]}"
    other = httpx.post(
        stack.first.url + "/api/articles",
        json={"article": {**article, "title": f"Other {new_tag}", "tagList": [new_tag]}},
        headers=auth(author["token"]),
        timeout=30,
    )
    assert other.status_code == 201, other.text

    # ...and the second sees both at once, not after a TTL.
    assert httpx.get(f"{stack.second.url}/api/articles/{slug}").json()["article"]["body"] == (
        "second"
    )
    tags_after = httpx.get(stack.second.url + "/api/tags").json()["tags"]
    assert tag in tags_before
    assert new_tag not in tags_before
    assert new_tag in tags_after
