"""The app's prepared statements are planned once per connection, not on every execution.

The app's connections run with `plan_cache_mode = force_generic_plan` and `jit = off`
(DB_PLAN_CACHE_MODE, DB_JIT): on a large set, `auto` prices a list's generic plan (its LIMIT
unknown, so a tenth of the table) far above the custom ones and planned every list read anew
(docs/performance.md, "Planned once"). Under `auto`, the flags statements are still shaped to
keep their generic plans: `= ANY` of a one-element array is not, which doubled that read's
Postgres CPU (docs/performance.md, "Signed-in reads")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.core.config import Settings
from app.db.database_production import create_engine
from app.repositories.articles import VIEWER_FLAGS_MANY, VIEWER_FLAGS_ONE, _page_statements

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


async def test_the_app_connections_plan_every_list_read_once(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    engine = create_engine(settings)
    try:
        pooled: Any = await engine.raw_connection()
        try:
            driver = pooled.driver_connection
            assert await driver.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
            assert await driver.fetchval("SHOW jit") == "off"
        finally:
            pooled.close()
    finally:
        await engine.dispose()
    shapes = {
        "global list": (False, False, False, False, False),
        "signed-in list": (True, False, False, False, False),
        "by tag": (False, True, False, False, False),
        "feed": (True, False, False, False, True),
    }
    values = {"viewer_id": 1, "tag": "dragons", "author": None, "favorited_by": None}
    for name, shape in shapes.items():
        page, _ = _page_statements(*shape)
        arguments = page.arguments({**values, "limit": 20, "offset": 0})
        assert await _custom_plans(settings, page.sql, *arguments) == 0, name
    assert await _custom_plans(settings, VIEWER_FLAGS_MANY.sql, 1, ["slug-1"]) == 0


async def test_under_auto_one_article_and_a_page_keep_their_generic_plans(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(DB_PLAN_CACHE_MODE="auto")
    # Postgres tries five custom plans before it compares them with the generic one.
    assert await _custom_plans(settings, VIEWER_FLAGS_ONE.sql, 1, "slug-1") <= 5
    assert await _custom_plans(settings, VIEWER_FLAGS_MANY.sql, 1, SLUGS) <= 5


async def test_under_auto_a_one_element_array_would_be_planned_on_every_execution(
    settings_factory: Callable[..., Settings],
) -> None:
    """Why one article has a statement of its own."""
    settings = settings_factory(DB_PLAN_CACHE_MODE="auto")
    custom = await _custom_plans(settings, VIEWER_FLAGS_MANY.sql, 1, ["slug-1"])
    assert custom == EXECUTIONS
