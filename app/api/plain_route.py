"""`PlainRequestRoute`: a documented route answered without FastAPI's request handler.

For the few endpoints called far more often than the rest, take no input but the request, and
answer with bytes rendered once (the `/health` probe; `GET /api/tags`, read from the cache).
FastAPI's handler would still solve their (empty) dependencies, open two exit stacks and
inspect the result on every call: about 30 us a request, 15 % of a `/health` probe and 15 % of
a cached tags read. The OpenAPI entry is built from the route's declaration as usual.

Nothing else changes: the route is matched, the app's exception handlers answer what the
endpoint raises, and every middleware runs. An endpoint using it must validate nothing, since
nothing is validated for it.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, cast

from fastapi import Request, Response
from fastapi.routing import APIRoute


class PlainRequestRoute(APIRoute):
    """A route whose endpoint takes the Request and returns the Response itself."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return cast(Callable[[Request], Coroutine[Any, Any, Response]], self.endpoint)
