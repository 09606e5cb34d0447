"""Request id, log context and the one access-log line per request.

Outermost of the app's own middleware: it binds `request_id` to every log line of the request,
echoes it in `X-Request-ID`, writes `request_completed`, and is the last line of defence that
turns an unhandled exception into the 500 envelope (logged once, with its stack trace), so that
even that response carries the request id and the security headers added further out.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import TYPE_CHECKING

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.error_handlers import unhandled_error_response
from app.core.logging_config import get_logger
from app.core.request_context import request_id_var

if TYPE_CHECKING:  # imported only with tracing on, by create_app
    from app.middleware.tracing import ServerSpans

log = get_logger("app.access")
_access_logger = logging.getLogger("app.access")

REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._-]{1,128}$")
UNMATCHED_ROUTE = "unmatched"
_TEMPLATE_KEY = "app.route_template"


def route_template(scope: Scope) -> str:
    """The matched route's template with its include prefix, e.g. /api/articles/{slug}.

    FastAPI puts the route object in scope["route"], but a prefix given to include_router is
    not part of that route's path. The prefix is the leading segments of the request path that
    the route's own template does not account for (our routes take one segment per parameter).
    """
    known: str | None = scope.get(_TEMPLATE_KEY)
    if known is not None:
        return known
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not template:
        if "endpoint" in scope and not scope.get("path_params"):
            # A plain Starlette route matched (the OpenAPI document, the docs page): FastAPI
            # records no route object for those, but without parameters the path is the
            # template, so the label set stays bounded.
            template = str(scope["path"])
            scope[_TEMPLATE_KEY] = template
            return template
        return UNMATCHED_ROUTE  # not kept: routing may not have happened yet
    template = str(template)
    path = str(scope.get("path", ""))
    if path == template:  # no parameter, no include prefix: nothing to work out
        scope[_TEMPLATE_KEY] = template
        return template
    route_segments = template.count("/")
    path_segments = path.rstrip("/").split("/") if path != "/" else [""]
    prefix_count = len(path_segments) - 1 - route_segments
    if prefix_count > 0:
        template = "/".join(path_segments[: prefix_count + 1]) + template
    scope[_TEMPLATE_KEY] = template  # the metrics and the access log both ask for it
    return template


def incoming_request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER and _VALID_REQUEST_ID.match(value):
            return bytes(value).decode("ascii")
    return _new_request_id()


class _RandomIds:
    """32 random hex digits per call, like nginx's $request_id, from the OS's CSPRNG read 4 KiB
    at a time: one getrandom() syscall per 256 ids instead of one each (uuid4().hex also
    builds a UUID object only to print it). A forked child starts with a fresh buffer, so
    two workers never hand out the same ids. Called on the event loop's thread only."""

    SIZE = 4096

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.buffer = b""
        self.offset = self.SIZE

    def __call__(self) -> str:
        offset = self.offset
        if offset >= self.SIZE:
            self.buffer = os.urandom(self.SIZE)
            offset = 0
        self.offset = offset + 16
        return self.buffer[offset : offset + 16].hex()


_new_request_id = _RandomIds()


class RequestContextMiddleware:
    """The request's id, its access-log line, and with tracing on its server span (here rather
    than in a middleware of its own: see app.middleware.tracing)."""

    def __init__(
        self, app: ASGIApp, *, expose_errors: bool = False, spans: ServerSpans | None = None
    ) -> None:
        self.app = app
        self.expose_errors = expose_errors
        self.spans = spans

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        spans = self.spans
        server_span = spans.start(scope) if spans is not None else None
        request_id = incoming_request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        # Set for this request and put back afterwards (not cleared: the caller's own
        # bindings, e.g. a test's, are none of this request's business).
        log_tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500
        response_started = False
        id_header = (REQUEST_ID_HEADER, request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = message.get("headers", [])
                for name, _ in headers:
                    if name == REQUEST_ID_HEADER:  # rare: the app set one; ours replaces it
                        headers = [h for h in headers if h[0] != REQUEST_ID_HEADER]
                        break
                else:
                    headers = list(headers)
                headers.append(id_header)
                message["headers"] = headers
                if server_span is not None:
                    server_span.response_started(scope, status)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if server_span is not None:
                server_span.failed(exc)
            if response_started:
                raise
            # Answered here rather than re-raised: the server would log the same trace again.
            log.exception("unhandled_exception", path=scope.get("path"))
            response = unhandled_error_response(exc, expose=self.expose_errors)
            await response(scope, receive, send_with_id)
        finally:
            self._log_completed(scope, status, started)
            request_id_var.reset(token)
            structlog.contextvars.reset_contextvars(**log_tokens)
            if server_span is not None:
                server_span.end()

    @staticmethod
    def _log_completed(scope: Scope, status: int, started: float) -> None:
        route = route_template(scope)
        # Probes arrive every few seconds from every balancer: keep them out of INFO logs.
        if route.startswith("/health"):
            level = logging.DEBUG
        elif status >= 500:
            level = logging.ERROR
        else:
            level = logging.INFO
        if not _access_logger.isEnabledFor(level):
            return  # nothing is built for a line that would be dropped
        client = scope.get("client")
        log.log(
            level,
            "request_completed",
            method=scope["method"],
            route=route,
            path=scope["path"],
            status=status,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
            client_ip=client[0] if client else None,
        )
