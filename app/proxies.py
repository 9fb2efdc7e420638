"""Forwarded headers, believed only from trusted reverse proxies (SHOW1_TRUSTED_PROXIES).

Behind a proxy the request's own scheme, host and client address are the proxy's; the proxy says what
the client used in X-Forwarded-Proto, X-Forwarded-Host and X-Forwarded-For. Anyone can send those
headers, so they are applied only when the connection comes from a trusted address (the semantics of
uvicorn's --forwarded-allow-ips, plus the host, which uvicorn does not take from the proxy). The API's
public URLs (app/deps.py: public_base_url) and the per-address limits then see the client's values.
`show1 serve` turns uvicorn's own handling off, so this is the only one.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

from starlette.types import ASGIApp, Receive, Scope, Send

# host or [IPv6], optional port: what a Host header may be.
_HOST = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$"
)


class TrustedProxies:
    def __init__(self, entries: list[str]) -> None:
        self.any = "*" in entries
        self.networks = [ip_network(entry, strict=False) for entry in entries if entry != "*"]

    def trusts(self, host: str | None) -> bool:
        address = _address(host)
        if address is None:
            return False
        return self.any or any(address in network for network in self.networks)


class ForwardedHeaders:
    """ASGI middleware: a trusted proxy's X-Forwarded-Proto, -Host and -For become the request's scheme,
    Host and client; from anyone else they are ignored."""

    def __init__(self, app: ASGIApp, trusted: list[str]) -> None:
        self.app = app
        self.proxies = TrustedProxies(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] not in ("http", "websocket") or not client or not self.proxies.trusts(client[0]):
            await self.app(scope, receive, send)
            return
        scope = dict(scope)
        headers = [(name.lower(), value) for name, value in scope["headers"]]
        forwarded = {
            name: value.decode("latin-1") for name, value in headers if name.startswith(b"x-forwarded-")
        }
        # A proxy sets (replaces) proto and host; with several, the nearest one's value is last.
        proto = _last(forwarded.get(b"x-forwarded-proto"))
        if proto in ("http", "https"):
            scope["scheme"] = proto if scope["type"] == "http" else {"http": "ws", "https": "wss"}[proto]
        host = _last(forwarded.get(b"x-forwarded-host"))
        if host and _HOST.match(host):
            headers = [(name, value) for name, value in headers if name != b"host"]
            headers.append((b"host", host.encode("latin-1")))
            scope["headers"] = headers
        # Proxies append to X-Forwarded-For: the client is the last address no trusted proxy added.
        chain = [part.strip() for part in forwarded.get(b"x-forwarded-for", "").split(",") if part.strip()]
        for address in reversed(chain):
            if not self.proxies.trusts(address) and _address(address) is not None:
                scope["client"] = (address, 0)
                break
        await self.app(scope, receive, send)


def _last(value: str | None) -> str | None:
    if not value:
        return None
    return value.split(",")[-1].strip() or None


def _address(host: str | None) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address((host or "").strip("[]"))
    except ValueError:
        return None
