"""CORS: Starlette's middleware, with a short path for requests that carry no Origin header.

Most API traffic (server-side clients, health probes, same-origin pages) sends no Origin.
Starlette then still parses the request headers and rebuilds the response's header list only
to add `Vary: Origin`; here that is one scan of the request headers and one appended header.
Requests with an Origin, preflights included, get Starlette's handling unchanged.
"""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware
from starlette.types import Message, Receive, Scope, Send

ORIGIN = b"origin"
VARY = b"vary"
VARY_ORIGIN = (VARY, b"Origin")


def _with_vary_origin(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`Vary: Origin` added, merged into one Vary header as Starlette does."""
    for name, _ in headers:
        if name.lower() == VARY:
            break
    else:  # the usual case: one scan, one appended header
        headers.append(VARY_ORIGIN)
        return headers
    varies = [value for name, value in headers if name.lower() == VARY]
    kept = [(name, value) for name, value in headers if name.lower() != VARY]
    kept.append((VARY, b", ".join([*varies, b"Origin"])))
    return kept


class OriginAwareCORSMiddleware(CORSMiddleware):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        for name, _ in scope["headers"]:
            if name == ORIGIN:
                await super().__call__(scope, receive, send)
                return

        async def send_with_vary(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _with_vary_origin(list(message.get("headers", ())))
            await send(message)

        await self.app(scope, receive, send_with_vary)
