"""Request body ceiling for the JSON API: 413 in the error envelope, decided from Content-Length
up front or while the body streams in, so an oversized body is never buffered whole.

The upload route streams to disk under its own, larger limit (UPLOAD_MAX_BYTES) and is exempt.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.error_handlers import PayloadTooLargeError, error_response

NO_BODY = -1
HTTP1 = frozenset({"1.0", "1.1"})


def _declared_length(scope: Scope) -> int | None:
    """Content-Length; in HTTP/1.x, NO_BODY when neither it nor Transfer-Encoding is sent
    (RFC 9112 6.3: the request has no body). HTTP/2 bodies may come without either."""
    declared: int | None = NO_BODY if scope.get("http_version") in HTTP1 else None
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
        if name == b"transfer-encoding":
            declared = None
    return declared


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int, exempt_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt_paths = frozenset(exempt_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared == NO_BODY:  # a GET, typically: nothing to count
            await self.app(scope, receive, send)
            return
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send)
            return

        received = 0
        refused = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes and not refused:
                    # Answer now and tell the app the client is gone: raising here instead would
                    # be caught by the framework's body parser and turned into a 400.
                    refused = True
                    await self._refuse(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:  # after the 413 nothing else may reach the client
                await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            # After the 413 the app only fails on the disconnect it was handed: nothing to add.
            if not refused:
                raise

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = PayloadTooLargeError(f"request body must not exceed {self.max_bytes} bytes")
        # The client may still be sending: closing the connection spares reading the rest.
        headers = {**error.headers, "Connection": "close"}
        response = error_response(error.status_code, error.messages, error.code, headers)
        await response(scope, receive, send)
