"""The signed-in reader's flags statements are planned once per connection, not on every
execution: with Postgres' default plan_cache_mode (auto) a prepared statement keeps its generic
plan only when it is priced no higher than the custom ones, and `= ANY` of a one-element array
is not, which doubled that read's Postgres CPU (docs/performance.md, "Signed-in reads")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.core.config import Settings
from app.db.database_production import create_engine
from app.repositories.articles import VIEWER_FLAGS_MANY, VIEWER_FLAGS_ONE

EXECUTIONS = 20
SLUGS = [f"slug-{i}" for i in range(20)]


async def _custom_plans(settings: Settings, sql: str, *arguments: Any) -> int:
    """How many of EXECUTIONS executions of `sql` Postgres planned anew (custom plans)."""
    engine = create_engine(settings)
    try:
        pooled: Any = await engine.raw_connection()
        try:
            driver = pooled.driver_connection
            statement = await driver.prepare(sql)
            for _ in range(EXECUTIONS):
                await statement.fetch(*arguments)
            row = await driver.fetchrow(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                "WHERE statement = $1",
                sql,
            )
            assert row["generic_plans"] + row["custom_plans"] == EXECUTIONS
            return int(row["custom_plans"])
        finally:
            pooled.close()
    finally:
        await engine.dispose()


async def test_one_article_and_a_page_keep_their_generic_plans(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    # Postgres tries five custom plans before it compares them with the generic one.
    assert await _custom_plans(settings, VIEWER_FLAGS_ONE.sql, 1, "slug-1") <= 5
    assert await _custom_plans(settings, VIEWER_FLAGS_MANY.sql, 1, SLUGS) <= 5


async def test_a_one_element_array_would_be_planned_on_every_execution(
    settings_factory: Callable[..., Settings],
) -> None:
    """Why one article has a statement of its own."""
    custom = await _custom_plans(settings_factory(), VIEWER_FLAGS_MANY.sql, 1, ["slug-1"])
    assert custom == EXECUTIONS
