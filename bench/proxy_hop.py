"""What the router costs: the app behind the edge nginx as it was before the router (pooled
keep-alive connections to the app), behind today's edge alone (one connection per request), and
behind edge + router, the way docker-compose.production.yml chains them (deploy/nginx/router.conf;
DEPLOYMENT.md, "Rollout").

    python -m bench.proxy_hop [--seconds 15] [--connections 32] [--path /api/tags]

Same app process (production settings, its own Postgres and Redis), same load generator as
`make bench` (wrk when installed, else locust), on 127.0.0.1. Prints, for each chain: req/s,
p50/p99 latency, and CPU per request of the nginx processes and of the app.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench import load as loads
from bench.environment import AppServer, production_env, services
from devstack.nginx import NginxProcess, render_template
from devstack.servers import free_port

ROOT = Path(__file__).resolve().parents[1]
NGINX_DIR = ROOT / "deploy" / "nginx"
WARMUP_SECONDS = 3.0


@dataclass(frozen=True)
class Chain:
    name: str
    measured: loads.Measured
    nginx_us: float
    app_us: float


def keeping_alive(conf: str) -> str:
    """nginx.conf as it was before the router: pooled keep-alive connections to the app."""
    pooled = conf.replace(
        "    server {\n",
        "    upstream pooled {\n        server ${NGINX_UPSTREAM};\n        keepalive 32;\n    }\n\n"
        "    server {\n",
        1,
    )
    pooled = pooled.replace("proxy_pass http://$conduit_upstream;", "proxy_pass http://pooled;")
    pooled = pooled.replace(
        "        proxy_http_version 1.1;\n",
        '        proxy_http_version 1.1;\n        proxy_set_header Connection "";\n',
    )
    if "upstream pooled" not in pooled or "http://$conduit_upstream" in pooled:
        raise ValueError("nginx.conf changed shape: update bench/proxy_hop.py")
    return pooled


def edge(workdir: Path, upstream: str, *, keepalive: bool = False) -> NginxProcess:
    port = free_port()
    values = {
        "NGINX_LISTEN": f"127.0.0.1:{port}",
        "NGINX_TLS_LISTEN": f"127.0.0.1:{free_port()}",
        "NGINX_SERVER_NAME": "_",
        "NGINX_UPSTREAM": upstream,
        "NGINX_RESOLVER": "127.0.0.1",  # the upstreams are addresses
        "NGINX_UPLOADS_ROOT": str(workdir / "public"),
        # One address sends everything: its limits would answer 429s, not measure the path.
        "NGINX_API_RATE": "10000000r/s",
        "NGINX_AUTH_RATE": "10000000r/s",
    }
    tls = render_template((NGINX_DIR / "tls-off.conf.template").read_text(), values)
    template = (ROOT / "nginx.conf").read_text()
    conf = render_template(keeping_alive(template) if keepalive else template, values)
    return NginxProcess(workdir, port, conf, {"tls/tls.conf": tls})


def router(workdir: Path, app: str) -> NginxProcess:
    port = free_port()
    values = {"NGINX_ROUTER_LISTEN": f"127.0.0.1:{port}", "NGINX_UPSTREAM": app}
    conf = render_template((NGINX_DIR / "router.conf").read_text(), values)
    upstream = render_template((NGINX_DIR / "upstream.conf.template").read_text(), values)
    return NginxProcess(workdir, port, conf, {"upstream.conf": upstream})


def measure(
    name: str, entry: NginxProcess, nginx: list[NginxProcess], app: AppServer, options: Options
) -> Chain:
    load = loads.Load("get", options.path, connections=options.connections)
    tool = loads.generator()
    loads.run(entry.url, load, WARMUP_SECONDS, tool, options.workdir)
    nginx_before = sum(process.cpu_seconds() for process in nginx)
    app_before = app.cpu_seconds()
    measured = loads.run(entry.url, load, options.seconds, tool, options.workdir)
    nginx_cpu = sum(process.cpu_seconds() for process in nginx) - nginx_before
    app_cpu = app.cpu_seconds() - app_before
    requests = max(measured.requests, 1)
    return Chain(name, measured, nginx_cpu * 1e6 / requests, app_cpu * 1e6 / requests)


@dataclass(frozen=True)
class Options:
    seconds: float
    connections: int
    path: str
    workdir: Path


def report(chains: list[Chain]) -> str:
    header = f"{'chain':<22} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'non2xx':>6} {'socket':>6} "
    header += f"{'nginx us/req':>12} {'app us/req':>10}"
    lines = [header, "-" * len(header)]
    for chain in chains:
        m = chain.measured
        lines.append(
            f"{chain.name:<22} {m.rps:>8,.0f} {m.p50_ms:>7.2f} {m.p99_ms:>7.2f} "
            f"{m.non2xx:>6} {m.socket_errors:>6} {chain.nginx_us:>12.0f} {chain.app_us:>10.0f}"
        )
    before, _, routed = chains
    lines.append(
        f"against the chain before the router: {routed.nginx_us - before.nginx_us:+.0f} us of "
        f"nginx CPU, {routed.app_us - before.app_us:+.0f} us of app CPU, "
        f"{routed.measured.p50_ms - before.measured.p50_ms:+.2f} ms of p50 per request"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--path", default="/api/tags")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="conduit-hop-") as tmp:
        workdir = Path(os.environ.get("PROXY_HOP_DIR", tmp))
        workdir.chmod(0o755)
        options = Options(args.seconds, args.connections, args.path, workdir)
        with services(workdir) as svc:
            env = production_env(svc, workdir, workers=1)
            with AppServer("app.main:app", env, workdir / "app.log") as app:
                app.start("/health")
                address = f"127.0.0.1:{app.port}"
                started: list[NginxProcess] = []
                try:
                    pooled = edge(workdir / "edge-pooled", address, keepalive=True)
                    started.append(pooled.start())
                    direct = edge(workdir / "edge-direct", address)
                    started.append(direct.start())
                    hop = router(workdir / "router", address)
                    started.append(hop.start())
                    routed = edge(workdir / "edge-routed", f"127.0.0.1:{hop.port}")
                    started.append(routed.start())
                    chains = [
                        measure("edge =keepalive=> app", pooled, [pooled], app, options),
                        measure("edge -> app", direct, [direct], app, options),
                        measure("edge -> router -> app", routed, [routed, hop], app, options),
                    ]
                finally:
                    for process in started:
                        process.stop()
    sys.stdout.write(report(chains) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
