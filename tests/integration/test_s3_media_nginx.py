"""The project's nginx.conf with deploy/nginx/s3-media.conf.template, in front of moto's S3
server (an emulator): images the app stored are served under /media/ with their content type,
the immutable Cache-Control and the Content-Disposition the object carries, and the nosniff and
Content-Security-Policy headers S3 cannot store."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from app.core.config import Settings
from app.resilience.circuit_breaker import CircuitBreaker
from app.services.s3_storage import S3ImageStorage
from devstack.nginx import render_template
from devstack.s3 import ACCESS_KEY_ID, SECRET_ACCESS_KEY, MotoS3Server
from tests.integration.conftest import ROOT, NginxServer, make_dir

MEDIA_TEMPLATE = ROOT / "deploy" / "nginx" / "s3-media.conf.template"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


@pytest.fixture(scope="module")
def bucket(s3_server: MotoS3Server) -> str:
    name = f"media-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(name)
    s3_server.allow_public_reads(name)
    return name


@pytest.fixture(scope="module")
def media_nginx(workdir: Path, s3_server: MotoS3Server, bucket: str) -> Iterator[NginxServer]:
    # No app behind it: /media/ never reaches the upstream.
    server = NginxServer(make_dir(workdir, "nginx-media-"), "127.0.0.1:9")
    origin = {"NGINX_S3_ORIGIN": f"{s3_server.url}/{bucket}"}
    media = server.dir / "media"
    media.mkdir()
    media.chmod(0o755)
    (media / "media.conf").write_text(render_template(MEDIA_TEMPLATE.read_text(), origin))
    checked = server.test_config()
    assert checked.returncode == 0, checked.stderr
    server.start()
    yield server
    server.stop()


async def stored_by_the_app(
    settings_factory: Callable[..., Settings],
    s3_server: MotoS3Server,
    bucket: str,
    scratch: Path,
    data: bytes,
) -> str:
    """Publish `data` exactly as the upload service does; its key."""
    settings = settings_factory(
        UPLOAD_STORAGE="s3",
        UPLOAD_DIR=str(scratch),
        S3_ENDPOINT_URL=s3_server.url,
        S3_BUCKET=bucket,
        S3_ACCESS_KEY_ID=ACCESS_KEY_ID,
        S3_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY,
    )
    storage = S3ImageStorage(settings, CircuitBreaker("storage"))
    await storage.start()
    try:
        staged, handle = storage.staging_file()
        with handle:
            handle.write(data)
        key = f"{hashlib.sha256(data).hexdigest()}.png"
        await storage.publish(staged, key)
    finally:
        await storage.close()
    return key


async def test_media_are_served_from_the_bucket_with_nosniff(
    media_nginx: NginxServer,
    settings_factory: Callable[..., Settings],
    s3_server: MotoS3Server,
    bucket: str,
    tmp_path: Path,
) -> None:
    key = await stored_by_the_app(settings_factory, s3_server, bucket, tmp_path, PNG)
    async with httpx.AsyncClient(base_url=media_nginx.url) as http:
        served = await http.get(f"/media/{key}")
        assert served.status_code == 200, served.text
        assert served.content == PNG
        assert served.headers["content-type"] == "image/png"
        assert served.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert served.headers["x-content-type-options"] == "nosniff"
        assert served.headers["x-frame-options"] == "DENY"
        assert served.headers.get_list("content-security-policy") == ["default-src 'none'; sandbox"]
        # The object's own, not a second one from nginx.
        assert served.headers.get_list("content-disposition") == [f'inline; filename="{key}"']

        missing = await http.get("/media/" + "0" * 64 + ".png")
        assert missing.status_code == 404
        assert missing.json()["code"] == "not_found"
        for path in (f"/media/{key[:-4]}.svg", "/media/", "/media/x"):
            assert (await http.get(path)).status_code in (400, 404), path
        refused = await http.post(f"/media/{key}", content=b"overwrite")
        assert refused.status_code == 404
    # Served by the bucket (one GET reached it), stored once.
    assert len(s3_server.requests("GET", f"/{bucket}/{key}")) == 1
    assert len(s3_server.requests("PUT", f"/{bucket}/{key}")) == 1


async def test_an_object_stored_without_a_disposition_gets_one_from_nginx(
    media_nginx: NginxServer, s3_server: MotoS3Server, bucket: str
) -> None:
    # What the app stored before it wrote Content-Disposition on each object.
    data = PNG + b"older"
    key = f"{hashlib.sha256(data).hexdigest()}.png"
    s3_server.admin().put_object(Bucket=bucket, Key=key, Body=data, ContentType="image/png")
    async with httpx.AsyncClient(base_url=media_nginx.url) as http:
        served = await http.get(f"/media/{key}")
    assert served.status_code == 200
    assert served.content == data
    assert served.headers.get_list("content-disposition") == [f'inline; filename="{key}"']
    assert served.headers.get_list("content-security-policy") == ["default-src 'none'; sandbox"]
