"""A throwaway certificate authority and the certificates it signs, for TLS tests.

Made with the `openssl` command line (Debian's `openssl`), not the `cryptography` package: the
project's `.venv` does not carry it (PyJWT would import it into every app worker). Certificates
name 127.0.0.1 and localhost, as the test servers listen there.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

VALID_DAYS = 2


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


def make_ca(directory: Path, name: str = "conduit-test-ca") -> CertPair:
    """A self-signed CA certificate and its key under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    pair = CertPair(directory / f"{name}.crt", directory / f"{name}.key")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", str(VALID_DAYS),
             "-subj", f"/CN={name}", "-keyout", str(pair.key), "-out", str(pair.cert),
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    return pair


def issue(ca: CertPair, directory: Path, name: str) -> CertPair:
    """A certificate for `name` (server and client use) signed by `ca`, valid for 127.0.0.1 and
    localhost."""
    pair = CertPair(directory / f"{name}.crt", directory / f"{name}.key")
    request = directory / f"{name}.csr"
    extensions = directory / f"{name}.ext"
    extensions.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
             "-keyout", str(pair.key), "-out", str(request))  # fmt: skip
    _openssl("x509", "-req", "-in", str(request), "-CA", str(ca.cert), "-CAkey", str(ca.key),
             "-CAcreateserial", "-days", str(VALID_DAYS), "-extfile", str(extensions),
             "-out", str(pair.cert))  # fmt: skip
    pair.key.chmod(0o644)  # redis-server may run as another user than the test
    return pair


def _openssl(*args: str) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise RuntimeError("openssl is missing: apt-get install openssl")
    subprocess.run([binary, *args], check=True, capture_output=True)
