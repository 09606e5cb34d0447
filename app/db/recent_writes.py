"""Read-your-writes with replicas: who wrote in the last few seconds, shared by every app process.

After a signed-in user's write commits, one short-lived Redis key is set for them (SET PX, on
the pipelined connection, before the response goes out); while it lives, their reads go to the
primary. Every app process sees the same key, so the user's next request finds their own write
whichever instance serves it. The key lives longer than any replica allowed to serve reads can
lag: max lag + one check interval (the age of the measurement) + one second of margin.

Failing safe: without Redis, or when Redis cannot answer, a signed-in reader reads the primary.
Only signed-in GETs on the replica path pay a look-up (one EXISTS, no extra connection);
anonymous reads and deployments without replicas pay nothing.
"""

from __future__ import annotations

from redis.exceptions import RedisError

from app.core.logging_config import get_logger
from app.db.cache import KEY_PREFIX
from app.db.redis import RedisService, RedisUnavailableError

log = get_logger(__name__)

MARGIN_SECONDS = 1.0


def window_seconds(max_lag: float, check_interval: float) -> float:
    return max_lag + check_interval + MARGIN_SECONDS


def writer_key(user_id: int) -> str:
    return f"{KEY_PREFIX}wrote:{user_id}"


class RecentWriters:
    def __init__(self, redis: RedisService, window: float) -> None:
        self.redis = redis
        self.window_ms = str(int(window * 1000))

    async def mark(self, user_id: int) -> None:
        """Remember that `user_id` just wrote (after the commit)."""
        if not self.redis.enabled:
            return
        try:
            await self.redis.execute("SET", writer_key(user_id), b"1", "PX", self.window_ms)
        except (RedisUnavailableError, RedisError) as error:
            # Their reads then find Redis failing too (and go to the primary), unless it comes
            # back within the window: the one gap in this design, see docs/read-replicas.md.
            log.warning("recent_write_not_recorded", user_id=user_id, error=str(error))

    async def wrote_recently(self, user_id: int) -> bool:
        """True when the user wrote within the window, or when that cannot be known."""
        if not self.redis.enabled:
            return True
        try:
            return bool(await self.redis.execute("EXISTS", writer_key(user_id)))
        except (RedisUnavailableError, RedisError):
            return True
