"""Registration, login and account updates."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.error_handlers import UnauthorizedError, ValidationFailedError
from app.core.hashing_queue import hashing_admitted
from app.core.security import HASHING_CONCURRENCY, hash_password, needs_rehash, verify_password
from app.core.tokens import create_access_token, signing_keys
from app.db.after_commit import after_commit
from app.db.cache import Cache
from app.db.token_versions import TokenVersions
from app.models import User
from app.repositories import articles as articles_repo
from app.repositories import users as users_repo
from app.resilience.login_throttle import LoginThrottle, normalise_email
from app.schemas.users import NewUser, UpdateUser
from app.schemas.users import User as UserOut
from app.services import presenters
from app.services.articles import invalidate_public_articles
from app.services.profiles import invalidate_profile

LOGIN_FAILED = "email or password is invalid"


def issue_token(user: User, settings: Settings) -> UserOut:
    keys = signing_keys(settings.secret_key, settings.previous_secret_keys)
    token = create_access_token(user.id, keys, settings.JWT_EXPIRE_MINUTES, user.token_version)
    return presenters.user(user, token)


async def _ensure_unique(
    session: AsyncSession, *, email: str | None, username: str | None, except_id: int | None = None
) -> None:
    taken = await users_repo.taken_fields(
        session, email=email, username=username, except_id=except_id
    )
    if taken:
        raise ValidationFailedError([f"{field} has already been taken" for field in taken])


async def register(session: AsyncSession, data: NewUser, settings: Settings) -> UserOut:
    await _ensure_unique(session, email=data.email, username=data.username)
    password_hash = await hash_password(data.password)
    try:
        user = await users_repo.create(
            session, email=data.email, username=data.username, password_hash=password_hash
        )
    except IntegrityError as exc:  # a concurrent registration won the race
        raise ValidationFailedError("email or username has already been taken") from exc
    return issue_token(user, settings)


class OpenSession(Protocol):
    """`app.api.deps.open_session` bound to the app's resources: a session that commits when
    the block succeeds."""

    def __call__(self, *, read_only: bool) -> AbstractAsyncContextManager[AsyncSession]: ...


async def login(
    sessions: OpenSession, email: str, password: str, settings: Settings, throttle: LoginThrottle
) -> UserOut:
    """Sessions are opened here, not for the whole request: a login waiting for its turn to
    hash (app.core.hashing_queue) must not hold a pooled connection meanwhile, or a login flood
    would leave every other request without one."""
    # Before the lookup and the hashing: a locked account costs nothing more (login_throttle).
    await throttle.refuse_if_locked(email)
    # The place among the hashes is taken before the lookup: a login that could not hash costs
    # no lookup either, and a flood looks up no more users at once than there are places.
    with hashing_admitted(HASHING_CONCURRENCY):
        async with sessions(read_only=True) as session:
            user = await users_repo.get_by_email(session, normalise_email(email))
        # Verified even when the user is unknown, so both failures take the same time.
        known = user.password_hash if user else None
        if not await verify_password(known, password) or user is None:
            await throttle.record_failure(email)
            raise UnauthorizedError(LOGIN_FAILED, code="invalid_credentials")
    if needs_rehash(user.password_hash):
        password_hash = await hash_password(password)
        async with sessions(read_only=False) as session:
            session.add(user)
            user.password_hash = password_hash
            await users_repo.save(session, user)
    return issue_token(user, settings)


async def update(
    session: AsyncSession,
    cache: Cache,
    user: User,
    data: UpdateUser,
    settings: Settings,
    token_versions: TokenVersions,
) -> UserOut:
    changes = data.model_dump(exclude_unset=True)
    if not changes:
        raise ValidationFailedError("user must contain at least one field to update")
    for required in ("email", "username", "password"):
        if required in changes and changes[required] is None:
            raise ValidationFailedError(f"{required} can't be blank")
    await _ensure_unique(
        session,
        email=changes.get("email") if changes.get("email") != user.email else None,
        username=changes.get("username") if changes.get("username") != user.username else None,
        except_id=user.id,
    )
    old_username = user.username
    # A new password or email is a change of credentials: the tokens issued before it stop
    # working. The email is the login name and where the account's mail goes, so changing it
    # (the owner after a leak, or a thief) signs every other holder of an old token out.
    if "password" in changes or changes.get("email", user.email) != user.email:
        user.token_version += 1
        user_id, version = user.id, user.token_version
        after_commit(session, lambda: token_versions.publish(user_id, version))
    if "password" in changes:
        user.password_hash = await hash_password(changes.pop("password"))
    for field, value in changes.items():
        setattr(user, field, value)
    try:
        await users_repo.save(session, user)
    except IntegrityError as exc:
        raise ValidationFailedError("email or username has already been taken") from exc
    invalidate_profile(session, cache, old_username, user.username)
    # Their articles, as cached for anonymous readers, carry their name, bio and image.
    slugs = await articles_repo.slugs_by_author(session, user.id)
    invalidate_public_articles(session, cache, *slugs)
    return issue_token(user, settings)
