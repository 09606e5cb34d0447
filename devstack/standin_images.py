"""Stand-ins for the official base images, built from Debian packages and cached in the registry.

No container registry answers here, so `python:3.11-slim-bookworm`, `postgres`, `redis`,
`nginx`, `prom/prometheus` and `prom/alertmanager` cannot be pulled. Each stand-in
(devstack/images/<name>/) is built on a minimal bookworm root made by `debootstrap
--variant=minbase` and honours the official image's interface as far as the project relies on it
(devstack/images/README.md).

Cache: each stand-in is pushed to the engine's local registry (storage under `.data/`, git-ignored)
with a tag derived from its build files, so a second run finds it and builds nothing; editing a
stand-in's files changes the tag and rebuilds that one only. The python stand-in is also pushed
as `library/python:3.11-slim-bookworm`, the name the project's Dockerfile uses, which the daemon
resolves through its registry mirror.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from devstack.docker_engine import DockerEngine

IMAGES_DIR = Path(__file__).resolve().parent / "images"
SUITE = "bookworm"
BASE_IMAGE = f"conduit-standin/debian:{SUITE}"
DEBIAN_MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")

log = structlog.get_logger("devstack")


@dataclass(frozen=True)
class Standin:
    name: str
    # Where the project's Dockerfile expects it under its official name (None: used by override).
    official: tuple[str, str] | None = None

    @property
    def repository(self) -> str:
        return f"standin/{self.name}"

    def tag(self) -> str:
        """bookworm-<hash of the build files>: a changed file is a new tag, hence a rebuild."""
        digest = hashlib.sha256(SUITE.encode())
        for path in sorted((IMAGES_DIR / self.name).rglob("*")):
            if path.is_file():
                digest.update(path.relative_to(IMAGES_DIR).as_posix().encode())
                digest.update(path.read_bytes())
        return f"{SUITE}-{digest.hexdigest()[:12]}"


STANDINS = (
    Standin("python", official=("library/python", "3.11-slim-bookworm")),
    Standin("postgres"),
    Standin("redis"),
    Standin("nginx"),
    Standin("prometheus"),
    Standin("alertmanager"),
)


def ensure_standins(engine: DockerEngine) -> dict[str, str]:
    """Every stand-in present in the registry; returns name -> pullable image reference."""
    references: dict[str, str] = {}
    for standin in STANDINS:
        tag = standin.tag()
        reference = f"{engine.registry}/{standin.repository}:{tag}"
        if engine.registry_has(standin.repository, tag):
            log.info("standin_cached", image=standin.name, reference=reference)
        else:
            _ensure_base(engine)
            started = time.monotonic()
            engine.docker(
                "build",
                "--network=host",
                f"--build-arg=BASE_IMAGE={BASE_IMAGE}",
                f"--tag={reference}",
                str(IMAGES_DIR / standin.name),
                timeout=900,
            )
            engine.docker("push", reference)
            log.info(
                "standin_built",
                image=standin.name,
                reference=reference,
                seconds=round(time.monotonic() - started, 1),
            )
        if standin.official:
            repository, official_tag = standin.official
            alias = f"{engine.registry}/{repository}:{official_tag}"
            engine.docker("pull", reference)
            engine.docker("tag", reference, alias)
            engine.docker("push", alias)
        references[standin.name] = reference
    return references


def _ensure_base(engine: DockerEngine) -> None:
    """The minimal bookworm root, imported once into the engine's (persistent) image store."""
    if engine.docker("images", "--quiet", BASE_IMAGE).strip():
        return
    started = time.monotonic()
    rootfs = engine.state_dir / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    subprocess.run(
        ["debootstrap", "--variant=minbase", SUITE, str(rootfs), DEBIAN_MIRROR],
        check=True,
        capture_output=True,
        timeout=900,
    )
    # apt's lists and downloaded packages (~80 MB) would sit in every stand-in's first layer;
    # each stand-in runs `apt-get update` itself.
    for leftovers in ("var/lib/apt/lists", "var/cache/apt/archives"):
        for path in (rootfs / leftovers).glob("*"):
            if path.is_file():
                path.unlink()
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(
        ["docker", "import", "--change", 'CMD ["bash"]', "-", BASE_IMAGE],
        stdin=tar.stdout,
        env=engine.env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    tar.wait(timeout=60)
    shutil.rmtree(rootfs, ignore_errors=True)
    log.info(
        "standin_base_imported", image=BASE_IMAGE, seconds=round(time.monotonic() - started, 1)
    )
