"""The cost curve of a scale run: Postgres CPU per request and p99 of each read against the
number of articles (log scale), from the JSON that `make bench BENCH_ARGS="--scale curve"`
writes::

    python -m bench.scale.chart bench/results/<stamp>-scale.json docs/scale-curve.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.scale.plan import SIZES


def draw(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [size for size in SIZES if size in results["meta"]["sizes"]]
    articles = [SIZES[size].articles for size in sizes]
    by = {(r["workload"], r["size"]): r for r in results["rows"]}
    names = list(dict.fromkeys(r["workload"] for r in results["rows"]))
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5))
    for name in names:
        rows = [by.get((name, size)) for size in sizes]
        if any(row is None for row in rows):
            continue
        left.plot(articles, [r["pg_cpu_ms_per_request"] for r in rows if r], marker="o", label=name)
        right.plot(articles, [r["p99_ms"] for r in rows if r], marker="o", label=name)
    for axis, label in (
        (left, "Postgres CPU ms per request"),
        (right, f"p99 ms at {results['meta']['connections']} connections"),
    ):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("articles")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3, which="both")
    right.legend(fontsize=7, loc="upper left")
    fig.suptitle("conduit-api: cost of each read against the data size (1 worker)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write(__doc__ or "")
        return 2
    draw(json.loads(Path(argv[0]).read_text()), Path(argv[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
