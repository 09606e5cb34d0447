"""Load the scale sets ahead of a run (or check that they are loaded and migrated)::

python -m bench.scale 1m            # 500 and 1m into .data/bench-scale; reused when there
python -m bench.scale curve --reload
"""

from __future__ import annotations

import argparse
import sys

from bench.scale import postgres, runner


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("sizes", help="1m, 100k, 10k, a comma-separated list, or curve")
    parser.add_argument("--reload", action="store_true", help="load again, even when loaded")
    args = parser.parse_args(argv)
    with postgres.cluster() as server:
        for size in runner.sizes_of(args.sizes):
            counts = runner.prepare(server, size, args.reload).manifest.counts
            rows = ", ".join(f"{table} {n:,}" for table, n in counts.items())
            sys.stdout.write(f"{size}: {rows}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
