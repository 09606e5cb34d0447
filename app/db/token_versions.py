"""Token revocation, known to every request of every process without a lookup of its own.

Postgres holds each account's token version (`users.token_version`); a password or email
change raises it, and tokens carry the version they were issued at (`ver`). Routes that load the
account compare the two directly. Most signed-in routes need only the user id, so after the
change commits, the new version is also published in Redis under `conduit:v1:tokver:<id>`, and
the rate limiter's script, which every API request runs anyway, reads that key along with its
count (`app.middleware.rate_limit`). No key means no change within a token's lifetime.

The key lives as long as a token does (JWT_EXPIRE_MINUTES): by then every token issued before
the change has expired, so the key has nothing left to revoke. It only ever rises (a script
compares), so two changes published out of order cannot lower it.

When the script's answer is missing (Redis unreachable, the limiter off), `current` asks Redis
itself, and the caller falls back to Postgres when Redis cannot answer: a revoked token is
refused during a Redis outage too, at the price of one primary-key lookup per signed-in request
while it lasts.
"""

from __future__ import annotations

import hashlib

from prometheus_client import Counter

from app.core.logging_config import get_logger
from app.db.cache import KEY_PREFIX
from app.db.redis import RedisCommandFailedError, RedisService, RedisUnavailableError
from app.resilience.retry import run_with_retry

log = get_logger(__name__)

RAISE_SCRIPT = """
local current = tonumber(redis.call('get', KEYS[1])) or -1
if tonumber(ARGV[1]) > current then
  redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
return current
"""
RAISE_SHA = hashlib.sha1(RAISE_SCRIPT.encode(), usedforsecurity=False).hexdigest()  # a name


def version_key(user_id: int) -> str:
    return f"{KEY_PREFIX}tokver:{user_id}"


class VersionUnknownError(Exception):
    """Redis could not say; the caller asks Postgres."""


class TokenVersions:
    def __init__(
        self, redis: RedisService, token_lifetime_seconds: int, retries: Counter | None = None
    ) -> None:
        self.redis = redis
        self.retries = retries
        # A minute of margin: a token issued a moment before the change, on a clock a little
        # ahead, still expires before the key does.
        self.lifetime = str(token_lifetime_seconds + 60)

    async def publish(self, user_id: int, version: int) -> None:
        """Announce `user_id`'s new token version (after the change committed)."""
        if not self.redis.enabled:
            return
        try:
            await run_with_retry(
                lambda: self.redis.evalsha(
                    RAISE_SCRIPT, RAISE_SHA, [version_key(user_id)], [version, self.lifetime]
                ),
                (RedisCommandFailedError,),
                attempts=3,
                deadline=2.0,
                operation="token_version_publish",
                retries=self.retries,
            )
        except RedisUnavailableError as error:
            # Routes that load the account still refuse the old tokens; the others refuse them
            # only while Redis is unreachable (they ask Postgres then). See docs/security.md.
            log.error(
                "token_revocation_not_published", user_id=user_id, version=version, error=str(error)
            )

    async def current(self, user_id: int) -> int | None:
        """The published version, None when none is (no change within a token's lifetime);
        raises VersionUnknownError when Redis is not configured or cannot answer."""
        if not self.redis.enabled:
            raise VersionUnknownError()
        try:
            raw = await self.redis.execute("GET", version_key(user_id))
        except RedisUnavailableError as error:
            raise VersionUnknownError() from error
        return parse_version(raw)


def parse_version(raw: object) -> int | None:
    """A version as Redis returned it (bytes, or None for no key)."""
    if raw is None:
        return None
    if isinstance(raw, bytes | str):
        try:
            return int(raw)
        except ValueError:
            pass
    log.warning("token_version_unreadable", value=repr(raw)[:40])
    return None
