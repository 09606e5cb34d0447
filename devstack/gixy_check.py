"""`python -m devstack.gixy_check` (make lint): gixy on the nginx configs as production runs them.

nginx.conf and deploy/nginx/ are templates (see devstack.nginx): gixy would read `${NGINX_LISTEN}`
as text, and it would not see what the includes add. So each config is rendered first, with the
values docker-compose.production.yml gives the service, into a directory laid out as the image's
/etc/nginx is (the includes where nginx looks for them), and gixy reads it from there, following
the includes. Every include template is checked in the configuration that mounts it. Rendering
keeps line numbers, so a finding is reported against the template's own line.

A finding is fixed in the config. A false positive is skipped with gixy's own switch (`--skips`)
for the one config it occurs in, with the reason next to it in CONFIGS.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devstack.nginx import render_template

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.production.yml"
DEFAULTED = re.compile(r"^\$\{(?P<name>[A-Z0-9_]+):-(?P<default>.*)\}$")
# Values Compose leaves empty because the feature is off by default: an AWS bucket's origin.
EXAMPLE_VALUES = {"NGINX_S3_ORIGIN": "https://conduit-media.s3.eu-west-1.amazonaws.com"}


@dataclass(frozen=True)
class Config:
    """One nginx as Compose runs it: its main template, the service whose environment renders
    it, and the templates it includes (path under /etc/nginx -> template in this repository)."""

    name: str
    main: str
    service: str
    includes: Mapping[str, str] = field(default_factory=dict)
    skips: tuple[str, ...] = ()


EDGE_TLS = {"tls/tls.conf": "deploy/nginx/tls.conf.template"}
CONFIGS = (
    Config(
        "edge",
        "nginx.conf",
        "nginx",
        {**EDGE_TLS, "media/media.conf": "deploy/nginx/media-off.conf.template"},
    ),
    # proxy_pass_normalized warns that nginx decodes and normalises a path after the host; here
    # the path is `/$1`, and the location's regex lets only `<64 hex>.<png|jpg|gif|webp>` into
    # $1, where decoding and normalising change nothing. The edge itself is checked with every
    # check by the config above, so the skip covers the media include only.
    Config(
        "edge with S3 media",
        "nginx.conf",
        "nginx",
        {**EDGE_TLS, "media/media.conf": "deploy/nginx/s3-media.conf.template"},
        skips=("proxy_pass_normalized",),
    ),
    Config(
        "router",
        "deploy/nginx/router.conf",
        "router",
        {"upstream.conf": "deploy/nginx/upstream.conf.template"},
    ),
)


def compose_values(service: str) -> dict[str, str]:
    """The service's NGINX_* environment in docker-compose.production.yml, `${VAR:-default}`
    taken at its default (what a deployment without overrides in .env gets)."""
    environment = yaml.safe_load(COMPOSE.read_text())["services"][service]["environment"]
    values: dict[str, str] = {}
    for name, raw in environment.items():
        text = str(raw)
        defaulted = DEFAULTED.match(text)
        values[name] = defaulted.group("default") if defaulted else text
    return {
        name: value or EXAMPLE_VALUES.get(name, value)
        for name, value in values.items()
        if name.startswith("NGINX_")
    }


def render(config: Config, directory: Path) -> Path:
    """Write the config and its includes under `directory`; the main file's path."""
    values = compose_values(config.service)
    files = {"nginx.conf": config.main, **config.includes}
    for relative, template in files.items():
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render_template((ROOT / template).read_text(), values))
    return directory / "nginx.conf"


def findings(conf: Path, skips: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """gixy's findings on `conf` (its JSON report), every severity."""
    command = [sys.executable, "-m", "gixy", "--format", "json", str(conf)]
    if skips:
        command += ["--skips", ",".join(skips)]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    # gixy exits 1 when it found something; anything else without a report is a failure to run.
    if result.returncode not in (0, 1) or not result.stdout.strip():
        raise RuntimeError(f"gixy failed ({result.returncode}): {result.stderr.strip()}")
    report: list[dict[str, Any]] = json.loads(result.stdout)
    return report


def describe(finding: Mapping[str, Any], config: Config, directory: Path) -> str:
    """One line naming the template and line, the check and why."""
    relative = Path(str(finding.get("file") or finding.get("path"))).relative_to(directory)
    files = {"nginx.conf": config.main, **config.includes}
    where = f"{files.get(relative.as_posix(), relative.as_posix())}:{finding.get('line', '?')}"
    return (
        f"{where}: [{finding['plugin']}] {finding['severity']}: {finding['summary']}"
        f" ({finding['reason']}; {finding['reference']})"
    )


def main() -> int:
    failed = 0
    for config in CONFIGS:
        with tempfile.TemporaryDirectory(prefix="gixy-") as tmp:
            directory = Path(tmp).resolve()
            found = findings(render(config, directory), config.skips)
            for finding in found:
                print(f"gixy, {config.name}: {describe(finding, config, directory)}")
        failed += len(found)
        skipped = f" (skipped: {', '.join(config.skips)})" if config.skips else ""
        print(f"gixy, {config.name}: {len(found)} finding(s){skipped}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
