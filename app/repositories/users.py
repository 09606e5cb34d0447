"""Queries on users and follows."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Integer,
    String,
    bindparam,
    delete,
    exists,
    func,
    select,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Article, Favorite, Follow, User
from app.repositories.driver import CompiledRead, ReadSource, fetch

_TOKEN_VERSION = CompiledRead.of(select(User.token_version).where(User.id == bindparam("id")))


async def token_version(source: ReadSource, user_id: int) -> int | None:
    """The account's token version; None when there is no such account."""
    rows = await fetch(source, _TOKEN_VERSION, {"id": user_id})
    return int(rows[0][0]) if rows else None


def _viewer_sets_statement() -> CompiledRead:
    """For bound `viewer_id`: the slugs they favourited and the usernames they follow, at most
    bound `limit` of each (index-only scans of the two primary keys, then a primary-key look-up
    per entry)."""
    viewer = bindparam("viewer_id", type_=BigInteger)
    limit = bindparam("limit", type_=Integer)
    favourites = (
        select(Article.slug)
        .join(Favorite, Favorite.article_id == Article.id)
        .where(Favorite.user_id == viewer)
        .limit(limit)
        .scalar_subquery()
    )
    followed = (
        select(User.username)
        .join(Follow, Follow.followee_id == User.id)
        .where(Follow.follower_id == viewer)
        .limit(limit)
        .scalar_subquery()
    )
    return CompiledRead.of(
        select(
            type_coerce(func.array(favourites), ARRAY(String)),
            type_coerce(func.array(followed), ARRAY(String)),
        )
    )


_VIEWER_SETS = _viewer_sets_statement()


async def viewer_sets(
    source: ReadSource, viewer_id: int, *, limit: int
) -> tuple[list[str], list[str]]:
    """(favourited slugs, followed usernames) of `viewer_id`, at most `limit` of each."""
    rows = await fetch(source, _VIEWER_SETS, {"viewer_id": viewer_id, "limit": limit})
    return list(rows[0][0]), list(rows[0][1])


async def get_by_id(session: AsyncSession, user_id: int) -> User | None:
    return await session.get(User, user_id)


async def get_by_email(session: AsyncSession, email: str) -> User | None:
    result = await session.execute(select(User).where(User.email == email))
    return result.scalar_one_or_none()


async def get_by_username(session: AsyncSession, username: str) -> User | None:
    result = await session.execute(select(User).where(User.username == username))
    return result.scalar_one_or_none()


async def taken_fields(
    session: AsyncSession, *, email: str | None, username: str | None, except_id: int | None = None
) -> list[str]:
    """Which of email/username already belong to another user (one round trip)."""
    checks = []
    if email is not None:
        checks.append(
            exists().where(User.email == email, User.id != (except_id or 0)).label("email")
        )
    if username is not None:
        checks.append(
            exists().where(User.username == username, User.id != (except_id or 0)).label("username")
        )
    if not checks:
        return []
    row = (await session.execute(select(*checks))).one()
    return [name for name, taken in row._mapping.items() if taken]


async def create(session: AsyncSession, *, email: str, username: str, password_hash: str) -> User:
    user = User(email=email, username=username, password_hash=password_hash)
    session.add(user)
    await session.flush()
    return user


async def is_following(session: AsyncSession, follower_id: int, followee_id: int) -> bool:
    query = select(
        exists().where(Follow.follower_id == follower_id, Follow.followee_id == followee_id)
    )
    return bool(await session.scalar(query))


async def follow(session: AsyncSession, follower_id: int, followee_id: int) -> None:
    await session.execute(
        insert(Follow)
        .values(follower_id=follower_id, followee_id=followee_id)
        .on_conflict_do_nothing()
    )


async def unfollow(session: AsyncSession, follower_id: int, followee_id: int) -> None:
    await session.execute(
        delete(Follow).where(Follow.follower_id == follower_id, Follow.followee_id == followee_id)
    )


async def save(session: AsyncSession, user: User) -> User:
    user.updated_at = func.statement_timestamp()
    await session.flush()
    return user
