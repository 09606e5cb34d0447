"""Trust X-Forwarded-For / X-Forwarded-Proto only when the peer is a configured proxy.

A client talking to the app directly cannot choose its own address by sending the header; behind
a trusted proxy the client address is the right-most hop that is not itself a trusted proxy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(items: Iterable[str]) -> list[Network]:
    return [ipaddress.ip_network(item, strict=False) for item in items]


def _is_trusted(host: str, networks: list[Network]) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in net for net in networks)


def client_from_forwarded(forwarded_for: str, networks: list[Network]) -> str | None:
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, networks):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return None
    return hops[0] if hops else None


class ForwardedHeadersMiddleware:
    def __init__(self, app: ASGIApp, trusted_proxies: Iterable[str]) -> None:
        self.app = app
        self.networks = parse_networks(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self.networks:
            peer = scope.get("client")
            if peer and _is_trusted(peer[0], self.networks):
                self._apply(scope)
        await self.app(scope, receive, send)

    def _apply(self, scope: Scope) -> None:
        headers = dict(scope["headers"])
        forwarded_for = headers.get(b"x-forwarded-for")
        if forwarded_for:
            client = client_from_forwarded(forwarded_for.decode("latin-1"), self.networks)
            if client:
                scope["client"] = (client, 0)
        proto = headers.get(b"x-forwarded-proto")
        if proto:
            value = proto.decode("latin-1").split(",")[0].strip().lower()
            if value in ("http", "https"):
                scope["scheme"] = value
