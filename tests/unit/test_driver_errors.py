"""Raw asyncpg reads: a value Postgres cannot take is the request's fault (422), not a broken
connection (which would be invalidated and reported as 503)."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.core.error_handlers import ValidationFailedError
from app.repositories import articles as articles_repo


@pytest.mark.parametrize("slug", ["nul\x00byte", "lone\ud800surrogate"])
async def test_unstorable_values_are_validation_errors(
    app: FastAPI, db_connection: AsyncConnection, slug: str
) -> None:
    async with AsyncSession(bind=db_connection, join_transaction_mode="create_savepoint") as s:
        with pytest.raises(ValidationFailedError) as caught:
            # A savepoint, as the test runs inside a transaction that a server error aborts.
            async with s.begin_nested():
                await articles_repo.view_by_slug(s, slug, None)
        assert caught.value.code == "invalid_value"
        # The connection is still usable: nothing was invalidated.
        assert await articles_repo.view_by_slug(s, "plain-slug", None) is None
