"""A throwaway S3-protocol server for tests and benchmarks: moto's standalone server.

moto is an emulator (an in-memory imitation of S3's HTTP API written in Python), not S3 and not
a production store: it speaks the protocol (SigV4, presigned URLs, conditional puts, multipart),
which is what the app's client code needs exercised, but its timings, consistency and limits are
not S3's. No S3-compatible server ships in Debian, so the harness uses this one.

The server's request log (one werkzeug line per request, e.g. `"PUT /bucket/key HTTP/1.1" 200`)
is collected so tests can count the requests the real server received.

moto runs from a virtualenv of its own (`.data/tools/moto-<version>`, made on first use from
PyPI), not from the project's `.venv`: it brings `cryptography`, and PyJWT imports
`cryptography` whenever it is installed, which put 8 MB into every app worker that `make bench`
measures, for a package the production image does not have (requirements-production.txt).
"""

from __future__ import annotations

import fcntl
import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from devstack.servers import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
MOTO_REQUIREMENT = "moto[server]==5.2.6"
MOTO_ENV = ROOT / ".data" / "tools" / f"moto-{MOTO_REQUIREMENT.rpartition('==')[2]}"

ACCESS_KEY_ID = "devstack-access-key"
# Any key is accepted by the emulator.
SECRET_ACCESS_KEY = "devstack-secret-key-0123456789"
REGION = "us-east-1"
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def moto_python() -> Path:
    """The interpreter of moto's own virtualenv, made the first time (a lock keeps two test or
    bench processes from building it at once)."""
    python = MOTO_ENV / "bin" / "python"
    ready = MOTO_ENV / ".installed"
    if ready.exists():
        return python
    MOTO_ENV.parent.mkdir(parents=True, exist_ok=True)
    with (MOTO_ENV.parent / ".moto.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(MOTO_ENV)], check=True)
            subprocess.run(
                [str(python), "-m", "pip", "install", "--quiet", MOTO_REQUIREMENT], check=True
            )
            ready.touch()
    return python


class MotoS3Server:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> MotoS3Server:
        self.process = subprocess.Popen(
            [str(moto_python()), "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            cwd=Path(__file__).resolve().parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()
        try:
            wait_for_port(self.port, timeout=timeout)
        except TimeoutError:
            self.stop()
            raise RuntimeError("moto server did not start:\n" + "\n".join(self.lines)) from None
        return self

    def _collect(self) -> None:
        assert self.process
        assert self.process.stdout
        for line in self.process.stdout:
            # werkzeug colours the request of a 4xx/5xx line: drop the escapes.
            self.lines.append(ANSI_ESCAPE.sub("", line.rstrip("\n")))

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): the kernel still accepts connections, nothing answers
        them, as with a hung store; requests wait out their read timeouts."""
        assert self.process
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.resume()  # a paused process would hold SIGTERM until continued
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._reader:
            self._reader.join(timeout=5)
        self.process = None

    def admin(self) -> Any:
        """A plain, synchronous botocore client (botocore comes with the app's aiobotocore) for
        setup and inspection in tests: boto3's `client("s3")` is this same object."""
        import botocore.session

        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
        )

    def create_bucket(self, name: str) -> None:
        self.admin().create_bucket(Bucket=name)

    def allow_public_reads(self, bucket: str) -> None:
        """The bucket policy a public base URL needs: anyone may GET an object."""
        statement = {
            "Effect": "Allow",
            "Principal": "*",
            "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{bucket}/*",
        }
        policy = {"Version": "2012-10-17", "Statement": [statement]}
        self.admin().put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))

    def keys(self, bucket: str) -> list[str]:
        listing = self.admin().list_objects_v2(Bucket=bucket)
        return sorted(item["Key"] for item in listing.get("Contents", []))

    def requests(self, method: str, path_prefix: str) -> list[str]:
        """Request-log lines of `method` on paths starting with `path_prefix`."""
        # The log line comes from the server's thread slightly after the response is sent.
        time.sleep(0.05)
        needle = f'"{method} {path_prefix}'
        return [line for line in self.lines if needle in line]

    def __enter__(self) -> MotoS3Server:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
