"""Profiling aid: the bench's seeded app, left running until interrupted::

python -m bench.serve            # prints the URL, the server pid and the data files
py-spy record -p PID -o profile.svg -d 20 &   # then drive it with wrk, e.g.
wrk -t2 -c64 -d20s -s bench/wrk/workload.lua URL -- article SLUGS_FILE
"""

from __future__ import annotations

import asyncio
import signal
import sys
import tempfile
import threading
from pathlib import Path

from bench.environment import AppServer, production_env, services
from bench.seed import PASSWORD, SeedPlan, seed


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="conduit-bench-serve-"))
    workdir.chmod(0o755)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with services(workdir) as svc:
        env = production_env(svc, workdir, workers=1)
        with AppServer("app.main:app", env, workdir / "app.log").start("/health") as app:
            seeded = asyncio.run(seed(app.url, SeedPlan()))
            (workdir / "slugs.txt").write_text("\n".join(seeded.slugs) + "\n")
            (workdir / "tokens.txt").write_text("\n".join(seeded.tokens) + "\n")
            creds = [f"{email} {PASSWORD}" for email in seeded.emails]
            (workdir / "creds.txt").write_text("\n".join(creds) + "\n")
            assert app.process is not None
            sys.stdout.write(
                f"url={app.url}\npid={app.process.pid}\nworkdir={workdir}\n"
                f"database_url={svc.database_url}\n"
            )
            sys.stdout.flush()
            stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
