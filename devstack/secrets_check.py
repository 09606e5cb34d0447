"""`python -m devstack.secrets_check` (make lint): no secret in the repository but the audited
false positives of `.secrets.baseline`.

detect-secrets scans every file of the repository (devstack.repo_files: tracked, and new files
git does not ignore) with the plugins and filters the baseline records, and the check fails on
  - a secret the baseline does not hold (compared by file, type and hash, not by line, so
    editing a file around a baselined test password changes nothing), and
  - a baselined secret not audited as a false positive (`"is_secret": false`).
It never writes the baseline: detect-secrets-hook rewrites it (and exits 3) whenever a baselined
secret moves to another line, which would fail every run after an unrelated edit, and refuses to
run while the baseline has unstaged changes.

`python -m devstack.secrets_check update` (make secrets-baseline) rescans into the baseline,
keeping the audit labels of the secrets it already held, dropping those that are gone and
refreshing line numbers; a new one then needs auditing
(`.venv/bin/detect-secrets audit .secrets.baseline`) or a `# pragma: allowlist secret` comment.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from detect_secrets.core import baseline
from detect_secrets.core.potential_secret import PotentialSecret
from detect_secrets.core.secrets_collection import SecretsCollection

from devstack.repo_files import ROOT, repository_files

BASELINE = ".secrets.baseline"


def scan(root: Path, baselined: str) -> SecretsCollection:
    """Every repository file under `root` but the baseline, with the settings in force."""
    files = [name for name in repository_files(root) if name != baselined]
    found = SecretsCollection(root=str(root))
    found.scan_files(*files)
    # Parallel scans name each secret by its absolute path (the collection's keys are relative),
    # and a secret's name is part of its identity: relative, as the baseline's are.
    # (Re-added one by one: set(secrets) would copy the hashes computed under the old name.)
    for name in found.files:
        secrets = list(found[name])
        for secret in secrets:
            secret.filename = name
        found[name] = {*secrets}
    return found


def load(root: Path) -> SecretsCollection:
    """The baseline's secrets; its plugins and filters become detect-secrets' settings (the
    baseline itself is left out of the scan by name, not by a filter it would record)."""
    return baseline.load(baseline.load_from_file(str(root / BASELINE)))


def problems(root: Path = ROOT) -> list[str]:
    """One line per secret that is not an audited false positive of the baseline."""
    baselined = load(root)
    new = scan(root, BASELINE) - baselined
    lines = [f"{where(name, secret)}: {secret.type}, not in {BASELINE}" for name, secret in new]
    lines += [
        f"{where(name, secret)}: {secret.type}, in {BASELINE} but not audited as a false positive"
        for name, secret in baselined
        if secret.is_secret is not False
    ]
    return sorted(lines)


def where(name: str, secret: PotentialSecret) -> str:
    return f"{name}:{secret.line_number}"


def update(root: Path = ROOT) -> int:
    """Rescan into the baseline, audit labels kept; the number of secrets left to audit."""
    old = load(root)
    found = scan(root, BASELINE)
    found.merge(old)
    output = baseline.format_for_output(found)
    output.pop("generated_at", None)  # a timestamp would make every update a diff
    (root / BASELINE).write_text(json.dumps(output, indent=2) + "\n")
    return sum(1 for _, secret in found if secret.is_secret is None)


def main(argv: list[str]) -> int:
    if argv[1:] == ["update"]:
        unaudited = update()
        print(f"{BASELINE} updated; {unaudited} secret(s) to audit")
        if unaudited:
            print(f"audit them: .venv/bin/detect-secrets audit {BASELINE}")
        return 0
    if argv[1:]:
        sys.stderr.write("usage: python -m devstack.secrets_check [update]\n")
        return 2
    found = problems()
    for line in found:
        print(f"detect-secrets: {line}")
    if found:
        print(
            "A real secret: remove it and rotate it. A false positive (a test fixture, a"
            " placeholder): `# pragma: allowlist secret` on its line, or `make secrets-baseline`"
            f" then `.venv/bin/detect-secrets audit {BASELINE}` (README, 'Lint')."
        )
        return 1
    print(f"detect-secrets: nothing outside {BASELINE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
