"""Work that must wait until a session's transaction has committed.

Announcing a change before its commit would announce one that may still roll back (a revoked
token version that Postgres never stored); after a rollback nothing changed, so nothing runs.
`app.api.deps.open_session` runs the actions once the commit succeeded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

_ACTIONS = "after_commit"


def after_commit(session: AsyncSession, action: Callable[[], Awaitable[None]]) -> None:
    session.info.setdefault(_ACTIONS, []).append(action)


async def run_after_commit(session: AsyncSession) -> None:
    actions: list[Callable[[], Awaitable[None]]] = session.info.pop(_ACTIONS, [])
    for action in actions:
        await action()
