"""Rate limiting as pure ASGI middleware.

Why middleware rather than a FastAPI dependency: it runs before routing, body parsing and any
database work, so a flood costs one Redis round-trip per request and nothing else; it covers
every path under the API prefix (unknown routes and 405s included, which dependencies never
see); and it can add the RateLimit-* headers to every response, successful or not.

It sits inside the forwarded-headers middleware (so `scope["client"]` is the real client, taken
from X-Forwarded-For only when the peer is a trusted proxy) and inside CORS (so browsers can read
a 429). The client is the user id of a valid token when there is one, else the client address.

The script that counts also reads, in the same round trip, the keys this request needs next:
the cache entries the route answers from (`RateLimiter.prefetch_keys`) and, for a signed-in client,
its published token version (app/db/token_versions.py), which the auth dependency compares with
the token's. Both land in `scope["state"]`.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.error_handlers import RateLimitedError, error_response
from app.core.tokens import (
    InvalidTokenError,
    SigningKeys,
    TokenClaims,
    decode_access_token,
    token_from_header,
)
from app.db.token_versions import version_key
from app.resilience.rate_limit import PREFETCHED_STATE, RateLimiter

AUTHORIZATION = b"authorization"


def token_claims(scope: Scope, keys: SigningKeys) -> TokenClaims | None:
    """The claims of the request's token when it has a valid one."""
    for name, value in scope["headers"]:
        if name == AUTHORIZATION:
            token = token_from_header(value.decode("latin-1"))
            if token:
                try:
                    return decode_access_token(token, keys)
                except InvalidTokenError:
                    pass  # the route answers 401; until then this is an anonymous client
            break
    return None


def client_key(scope: Scope, claims: TokenClaims | None) -> str:
    if claims is not None:
        return f"user:{claims.user_id}"
    client = scope.get("client")
    return f"ip:{client[0]}" if client else "ip:unknown"


class RateLimitMiddleware:
    """`api_prefix`, when given, is the limiter's own prefix (settings.API_PREFIX): a path
    outside it has no rule (`RateLimiter.rules_for`), so it passes without the limiter being
    looked up on the app's state (health probes, uploads, the OpenAPI document)."""

    def __init__(self, app: ASGIApp, *, api_prefix: str | None = None) -> None:
        self.app = app
        prefix = api_prefix.rstrip("/") if api_prefix is not None else None
        self.prefix = prefix
        self.prefix_dir = None if prefix is None else prefix + "/"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.prefix_dir is not None and scope["type"] == "http":
            path = scope["path"]
            if not path.startswith(self.prefix_dir) and path != self.prefix:
                await self.app(scope, receive, send)
                return
        limiter = self._limiter(scope)
        rules = limiter.rules_for(scope["method"], scope["path"]) if limiter else []
        if limiter is None or not rules:
            await self.app(scope, receive, send)
            return

        claims = token_claims(scope, scope["app"].state.resources.signing_keys)
        client = client_key(scope, claims)
        read_keys = limiter.prefetch_keys(
            scope["method"], scope["path"], client, scope.get("query_string", b"")
        )
        if claims is not None:
            read_keys += (version_key(claims.user_id),)
        decision = await limiter.check(rules, client, read_keys)
        if read_keys and isinstance(decision.prefetched, tuple):
            scope.setdefault("state", {})[PREFETCHED_STATE] = dict(
                zip(read_keys, decision.prefetched, strict=True)
            )
        if not decision.allowed:
            refusal = RateLimitedError(
                headers={k.decode(): v.decode() for k, v in decision.headers()},
            )
            response = error_response(429, refusal.messages, refusal.code, refusal.headers)
            await response(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and not _limited_by_route(message):
                message["headers"] = [*message.get("headers", []), *decision.headers()]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    @staticmethod
    def _limiter(scope: Scope) -> RateLimiter | None:
        if scope["type"] != "http" or "app" not in scope:
            return None
        resources = getattr(scope["app"].state, "resources", None)
        limiter: RateLimiter | None = getattr(resources, "rate_limiter", None)
        return limiter if limiter is not None and limiter.enabled else None


def _limited_by_route(message: Message) -> bool:
    """A 429 that a route's own limit answered (app.resilience.login_throttle, per account)
    keeps that limit's RateLimit-* headers instead of getting the client's appended."""
    return message["status"] == 429 and any(
        name == b"ratelimit-limit" for name, _ in message.get("headers", [])
    )
