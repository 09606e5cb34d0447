"""Failed logins limited per account (RATE_LIMIT_LOGIN_ACCOUNT), on top of the per-client
RATE_LIMIT_LOGIN: many addresses guessing one account's password are slowed down as one.

- The account is the submitted email, normalised (trimmed, lower-cased), whether or not a user
  has it, so a refusal for an unknown email looks exactly like one for a real account: the
  limit tells nobody which emails are registered.
- Only failures count. While an account is over its limit every attempt is refused, the right
  password included (a 200 among the 429s would tell the attacker which guess was right), and
  refused first: no user lookup and no Argon2 work, so a flood against a locked account costs
  one Redis round trip per request.
- Keys hold sha256 of the normalised email, never the email: emails are personal data, and
  Redis keys are listed, dumped and replicated by operators' tools.
- Counted by the rate limiter's own machinery (`RateLimiter.peek` before the password is
  checked, `RateLimiter.check` after a failure): the sliding window counter in Redis through its
  circuit breaker, in process while Redis is away, decisions in
  `rate_limit_decisions_total{rule="login_account"}`.

Asking and counting are two steps, not one atomic one: attempts that are in flight together all
pass the question before any of them is counted, so a concurrent burst gets up to (attempts in
flight) more guesses than the limit; the hashing queue (app.core.hashing_queue) bounds how many
can be in flight per process.
"""

from __future__ import annotations

import hashlib

from app.core.error_handlers import RateLimitedError
from app.core.logging_config import get_logger
from app.resilience.rate_limit import RateLimiter

log = get_logger(__name__)


def normalise_email(email: str) -> str:
    return email.strip().lower()


def account_key(email: str) -> str:
    """The limiter's client key for the account an email names (hashed, never in clear)."""
    digest = hashlib.sha256(normalise_email(email).encode()).hexdigest()
    return f"account:{digest}"


class LoginThrottle:
    """Per-account failure limit around one login; a no-op when rate limits are off."""

    def __init__(self, limiter: RateLimiter | None) -> None:
        self.limiter = limiter if limiter is not None and limiter.enabled else None

    async def refuse_if_locked(self, email: str) -> None:
        """Raise the 429 when the account has no failure left in its window."""
        if self.limiter is None:
            return
        decision = await self.limiter.peek(self.limiter.login_account, account_key(email))
        if not decision.allowed:
            headers = {name.decode(): value.decode() for name, value in decision.headers()}
            raise RateLimitedError(headers=headers)

    async def record_failure(self, email: str) -> None:
        """Count a failed attempt; the one that uses up the account's limit is logged."""
        if self.limiter is None:
            return
        rule = self.limiter.login_account
        key = account_key(email)
        decision = await self.limiter.check([rule], key, record=False)
        if decision.allowed and decision.remaining == 0:
            log.warning(
                "login_account_limited",
                account=key,
                limit=str(rule.item),
                retry_after=decision.reset_after,
            )
