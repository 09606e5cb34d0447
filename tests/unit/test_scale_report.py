"""The scale report's verdicts: within 2x by Postgres CPU and p99, no errors; an offset past the
small set's end is marked as such and compared with the small set's first page as well."""

from __future__ import annotations

from typing import Any

from bench.scale import report


def _row(workload: str, size: str, pg: float, p99: float, errors: int = 0) -> dict[str, Any]:
    return {
        "workload": workload,
        "size": size,
        "pg_cpu_ms_per_request": pg,
        "pg_exec_ms_per_request": pg / 2,
        "p99_ms": p99,
        "rps": 1000.0,
        "errors": errors,
    }


def _results(rows: list[dict[str, Any]], small_articles: int = 500) -> dict[str, Any]:
    return {"rows": rows, "sets": {"500": {"counts": {"articles": small_articles}}}}


def _verdicts(results: dict[str, Any]) -> dict[str, str]:
    return {line[0]: line[7] for line in report.comparison(results, "1m")[1:]}


def test_ratios_and_errors_decide() -> None:
    rows = [
        _row("list", "500", 0.5, 500), _row("list", "1m", 0.9, 900),
        _row("feed", "500", 1.0, 500), _row("feed", "1m", 2.1, 600),
        _row("tags", "500", 0.1, 200), _row("tags", "1m", 0.1, 401),
        _row("comments", "500", 2.0, 3000), _row("comments", "1m", 2.0, 3000, errors=1),
    ]  # fmt: skip
    assert _verdicts(_results(rows)) == {"list": "✓", "feed": "✗", "tags": "✗", "comments": "✗"}


def test_an_offset_past_the_small_sets_end_is_also_compared_with_its_first_page() -> None:
    rows = [
        _row("list", "500", 0.5, 500), _row("list", "1m", 0.45, 450),
        _row("list offset 10000", "500", 0.2, 120), _row("list offset 10000", "1m", 0.45, 400),
    ]  # fmt: skip
    verdicts = _verdicts(_results(rows))
    assert verdicts["list offset 10000"] == "past 500's end"
    assert verdicts["list offset 10000 vs 500's first page"] == "✓"
    # A small set that holds the page compares it as any other read.
    verdicts = _verdicts(_results(rows, small_articles=20_000))
    assert verdicts["list offset 10000"] == "✗"
    assert "list offset 10000 vs 500's first page" not in verdicts
