"""Access tokens: JWTs (PyJWT, HS256) with a key id, a token version, and key rotation.

- `kid` (header): which key signed the token. SECRET_KEY signs; the keys in
  SECRET_KEY_PREVIOUS still verify, so a rotation logs nobody out. The id is a digest of the key,
  not a name an operator picks: every process derives the same id from the same key, and it
  says nothing about the key that the token's signature does not already say.
- `ver` (claim): the account's token version when the token was issued. A password or email
  change raises the version, which revokes every token issued before it (see
  app/services/token_versions.py for how requests learn the current version without a lookup).

Tokens issued before key ids existed carry no `kid`: they are tried against every configured
key and read as version 0, so deploying this logged nobody out either.
"""

from __future__ import annotations

import functools
import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import jwt

JWT_ALGORITHM = "HS256"
# Verified tokens remembered per process: a client sends the same token on every request, and
# the rate limiter and the route both need its claims.
VERIFIED_TOKEN_CACHE = 4096
_KID_CONTEXT = b"conduit-api jwt key id\0"


def key_id(secret: str) -> str:
    """A stable, public id for a signing key: 16 hex digits of a domain-separated SHA-256."""
    return hashlib.sha256(_KID_CONTEXT + secret.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class SigningKeys:
    """The key that signs, and every key that verifies (the signing one first)."""

    signing_kid: str
    signing_secret: str
    verifying: tuple[tuple[str, str], ...]  # (kid, secret)

    def secrets_for(self, kid: object) -> list[str]:
        if kid is None:  # issued before key ids: any configured key may have signed it
            return [secret for _, secret in self.verifying]
        return [secret for known, secret in self.verifying if known == kid]


@functools.lru_cache(maxsize=8)
def signing_keys(current: str, previous: tuple[str, ...] = ()) -> SigningKeys:
    """Built once per key set (settings are fixed for a process's life)."""
    verifying = [(key_id(current), current)]
    verifying += [(key_id(secret), secret) for secret in previous if secret != current]
    return SigningKeys(verifying[0][0], current, tuple(verifying))


class TokenClaims(NamedTuple):
    user_id: int
    version: int


class InvalidTokenError(Exception):
    """The token is malformed, tampered with, expired, signed by an unknown key or not ours."""


def create_access_token(
    user_id: int, keys: SigningKeys, expire_minutes: int, version: int = 0
) -> str:
    now = datetime.now(UTC)
    claims = {
        "sub": str(user_id),
        "ver": version,
        "iat": now,
        "exp": now + timedelta(minutes=expire_minutes),
    }
    return jwt.encode(
        claims, keys.signing_secret, algorithm=JWT_ALGORITHM, headers={"kid": keys.signing_kid}
    )


def decode_access_token(token: str, keys: SigningKeys) -> TokenClaims:
    """The claims of a valid, live token; raises InvalidTokenError for anything else."""
    try:
        user_id, version, expires_at = _verified_claims(token, keys)
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise InvalidTokenError(str(exc)) from exc
    # A remembered token is still checked against the clock on every use.
    if time.time() >= expires_at:
        raise InvalidTokenError("Signature has expired")
    return TokenClaims(user_id, version)


@functools.lru_cache(maxsize=VERIFIED_TOKEN_CACHE)
def _verified_claims(token: str, keys: SigningKeys) -> tuple[int, int, float]:
    """(user id, version, expiry) of a token whose signature and claims verify; errors are not
    cached.

    Safe to memoise: a signature verifies forever for the same token and key set, and expiry is
    the only claim that changes with time. A key removed from the set is a new cache key.
    """
    candidates = keys.secrets_for(jwt.get_unverified_header(token).get("kid"))
    if not candidates:
        raise jwt.InvalidKeyError("token signed by a key that is not configured")
    error: jwt.PyJWTError | None = None
    for secret in candidates:
        try:
            claims = jwt.decode(
                token,
                secret,
                algorithms=[JWT_ALGORITHM],
                options={"require": ["exp", "iat", "sub"]},
            )
        except jwt.InvalidSignatureError as exc:  # the next key, if any, may have signed it
            error = exc
            continue
        version = claims.get("ver", 0)
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise jwt.InvalidTokenError("ver must be a non-negative integer")
        return int(claims["sub"]), version, float(claims["exp"])
    assert error is not None  # nosec B101 # the loop ran at least once
    raise error


def token_from_header(authorization: str | None) -> str | None:
    """`Token <jwt>` (RealWorld) or `Bearer <jwt>`; None when absent or another scheme."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() not in ("token", "bearer") or not credentials.strip():
        return None
    return credentials.strip()
