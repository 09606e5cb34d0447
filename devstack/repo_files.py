"""The repository's files as make lint sees them: what git tracks, plus new files git does not
ignore (so a file is checked before its first commit; on a clean clone the two are the same).

`python -m devstack.repo_files dockerfiles|shell-scripts` prints the ones hadolint and shellcheck
read, one per line, for the Makefile.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHELLS = ("sh", "bash", "dash")


def repository_files(root: Path = ROOT) -> list[str]:
    """Paths relative to `root`, sorted; deleted but not yet committed files left out."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sorted({name for name in listed.split("\0") if name and (root / name).is_file()})


def dockerfiles(root: Path = ROOT) -> list[str]:
    return [name for name in repository_files(root) if Path(name).name == "Dockerfile"]


def is_shell_script(path: Path) -> bool:
    """A `.sh` file, or one whose `#!` line runs a POSIX shell or bash (deploy.sh, .ci/run)."""
    if path.suffix == ".sh":
        return True
    with path.open("rb") as handle:
        first = handle.readline(200).decode(errors="replace")
    if not first.startswith("#!"):
        return False
    words = first[2:].split()
    if words and Path(words[0]).name == "env":  # `#!/usr/bin/env [-S] bash`
        words = [word for word in words[1:] if not word.startswith("-")]
    return bool(words) and Path(words[0]).name in SHELLS


def shell_scripts(root: Path = ROOT) -> list[str]:
    return [name for name in repository_files(root) if is_shell_script(root / name)]


def main(argv: list[str]) -> int:
    listings = {"dockerfiles": dockerfiles, "shell-scripts": shell_scripts}
    if len(argv) != 2 or argv[1] not in listings:
        sys.stderr.write(f"usage: python -m devstack.repo_files {'|'.join(listings)}\n")
        return 2
    names = listings[argv[1]]()
    if not names:
        sys.stderr.write(f"no {argv[1]} found\n")
        return 1
    sys.stdout.write("".join(f"{name}\n" for name in names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
