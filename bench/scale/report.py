"""The scale run's figures: per large size, each read against the small set as ratios (within
2x: ✓), then every captured plan on one line, then how each set was loaded."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.scale.plan import SMALL
from bench.scale.workloads import READS

# A page past the small set's end is an empty page and a count there: its ratio compares
# different work. Such a row is marked, and compared again with the small set's first page.
OFFSETS = {read.name: read.offset for read in READS if read.offset}
FIRST_PAGE = "list"

LIMIT = 2.0
HEADER = (
    "workload",
    "{s} PG ms/req",
    "{l} PG ms/req",
    "ratio",
    "{s} p99 ms",
    "{l} p99 ms",
    "ratio",
    "ok",
    "{s} stmt ms/req",
    "{l} stmt ms/req",
    "{l} req/s",
    "{l} errors",
)


def _ratio(large: float, small: float) -> float:
    return large / small if small > 0 else float("inf")


def _past_the_end(results: dict[str, Any], name: str) -> bool:
    offset = OFFSETS.get(name)
    small_set = results.get("sets", {}).get(SMALL, {})
    articles = small_set.get("counts", {}).get("articles")
    return offset is not None and articles is not None and offset >= articles


def comparison(results: dict[str, Any], large: str) -> list[list[str]]:
    by = {(r["workload"], r["size"]): r for r in results["rows"]}
    names = list(dict.fromkeys(r["workload"] for r in results["rows"]))
    lines = [[h.format(s=SMALL, l=large) for h in HEADER]]
    for name in names:
        small, big = by.get((name, SMALL)), by.get((name, large))
        if small is None or big is None:
            continue
        lines.append(_line(name, small, big))
        first_page = by.get((FIRST_PAGE, SMALL))
        if _past_the_end(results, name):
            lines[-1][7] = f"past {SMALL}'s end"
            if first_page is not None:
                lines.append(_line(f"{name} vs {SMALL}'s first page", first_page, big))
    return lines


def _line(name: str, small: dict[str, Any], big: dict[str, Any]) -> list[str]:
    pg = _ratio(big["pg_cpu_ms_per_request"], small["pg_cpu_ms_per_request"])
    p99 = _ratio(big["p99_ms"], small["p99_ms"])
    ok = pg <= LIMIT and p99 <= LIMIT and big["errors"] == 0
    return [
        name,
        f"{small['pg_cpu_ms_per_request']:.3f}",
        f"{big['pg_cpu_ms_per_request']:.3f}",
        f"{pg:.2f}",
        f"{small['p99_ms']:.1f}",
        f"{big['p99_ms']:.1f}",
        f"{p99:.2f}",
        "✓" if ok else "✗",
        f"{small['pg_exec_ms_per_request']:.3f}",
        f"{big['pg_exec_ms_per_request']:.3f}",
        f"{big['rps']:,.0f}",
        str(big["errors"]),
    ]


def _aligned(table: Sequence[Sequence[str]]) -> str:
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    out = ["  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in table]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def _plans(results: dict[str, Any]) -> list[str]:
    lines = []
    for plan in results["plans"]:
        flag = f"  SEQ SCAN on {', '.join(plan['seq_scans'])}" if plan["seq_scans"] else ""
        lines.append(
            f"{plan['workload']:>18} {plan['size']:>5} {plan['ms']:9.2f} ms "
            f"hit {plan['hit']:>7,} read {plan['read']:>7,}  {plan['shape']}{flag}"
        )
    return lines


def _sets(results: dict[str, Any]) -> list[str]:
    lines = []
    for size, loaded in results["sets"].items():
        state = "reused, loaded earlier in" if loaded["reused"] else "loaded in"
        steps = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in loaded["steps"].items())
        counts = ", ".join(f"{table} {n:,}" for table, n in loaded["counts"].items())
        lines.append(
            f"  {size}: {state} {loaded['seconds']:.1f}s ({steps}); "
            f"alembic upgrade head {loaded['migrate_s']:.1f}s this run\n      {counts}"
        )
    return lines


def _title(results: dict[str, Any], large: str) -> str:
    meta = results["meta"]
    return (
        f"{SMALL} vs {large} articles: 1 worker each, {meta['connections']} connections, "
        f"{meta['generator']}, {meta['duration_s']:.0f}s per set in {meta['rounds']} interleaved "
        f"slices; PG = Postgres CPU (every process) per request, stmt = pg_stat_statements' "
        "planning + execution time; "
        f"ok = both ratios <= {LIMIT:.0f} and no errors; an offset past the {SMALL} set's end "
        f"is an empty page there, and is compared with its first page too"
    )


def text(results: dict[str, Any]) -> str:
    parts = []
    for large in results["meta"]["sizes"]:
        if large != SMALL:
            parts += [_title(results, large), _aligned(comparison(results, large)), ""]
    seq = sum(1 for plan in results["plans"] if plan["seq_scans"] and plan["size"] != SMALL)
    parts.append(
        "plans (auto_explain, one request each: total, shared buffers hit/read, shape; "
        f"beyond the {SMALL} set, {seq} with a SEQ SCAN on articles, favorites, follows, "
        "comments, article_tags, tags or users; xN: the node ran N times):"
    )
    parts += _plans(results)
    parts += ["", "sets:", *_sets(results)]
    return "\n".join(parts)


def markdown(results: dict[str, Any]) -> str:
    parts = []
    for large in results["meta"]["sizes"]:
        if large == SMALL:
            continue
        table = comparison(results, large)
        parts += [f"**{_title(results, large)}**", ""]
        parts.append("| " + " | ".join(table[0]) + " |")
        parts.append("|" + "---|" * len(table[0]))
        parts += ["| " + " | ".join(line) + " |" for line in table[1:]]
        parts.append("")
    parts += ["```", *_plans(results), "```", "", "```", *_sets(results), "```"]
    return "\n".join(parts)
