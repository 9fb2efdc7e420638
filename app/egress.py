"""Where the service may send requests that a tenant aimed: webhooks must not reach inside its network.

A tenant's `webhook_url` is checked when the job is submitted and again on every delivery, because a
name's addresses can change in between (DNS rebinding). A URL passes when it is http(s), carries no
credentials, and every address its host resolves to is publicly routable: loopback, private, shared
(CGNAT), link-local (cloud metadata at 169.254.169.254), multicast, unspecified and reserved ranges
are refused, in IPv4, IPv6 and the IPv6 forms that embed an IPv4 address (mapped, NAT64, 6to4,
Teredo). The host is resolved with the system resolver, which also reads the numeric spellings that
`ipaddress` does not (`2130706433`, `0177.0.0.1`, `127.1`), so those resolve to what they mean and are
judged by it. Hosts named in `SHOW1_WEBHOOK_ALLOWED_HOSTS` pass whatever they resolve to: private
deployments deliver to their own receivers that way.

Delivery connects to the very address that was checked (`GuardedTransport`), so nothing can swap the
address between the check and the connection; TLS still verifies the certificate against the name.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread
import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]
_SCHEMES = {"http": 80, "https": 443}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class ForbiddenTarget(ValueError):
    """A URL the service refuses to send requests to; the message says why, for the tenant."""


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise ForbiddenTarget(f"host {host!r} does not resolve") from error
    return [info[4][0] for info in infos]


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: IPAddress) -> bool:
    """Routable on the public internet, including through any IPv4 address embedded in an IPv6 one."""
    if address.is_multicast or not address.is_global:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_public(embedded)
    return True


@dataclass(frozen=True)
class EgressPolicy:
    allowed_hosts: frozenset[str] = frozenset()
    resolver: Resolver = system_resolver

    @classmethod
    def from_hosts(cls, hosts: Iterable[str], resolver: Resolver = system_resolver) -> EgressPolicy:
        return cls(frozenset(host.strip().lower().strip("[]") for host in hosts if host.strip()), resolver)

    def check_url(self, url: str) -> None:
        """Raise ForbiddenTarget unless `url` is a webhook target this service may call."""
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES:
            raise ForbiddenTarget(f"scheme {parts.scheme!r} is not allowed; use http or https")
        if parts.username is not None or parts.password is not None:
            raise ForbiddenTarget("credentials in the URL are not allowed")
        try:
            port = parts.port or _SCHEMES[parts.scheme]
        except ValueError as error:
            raise ForbiddenTarget(f"invalid port: {error}") from error
        if not parts.hostname:
            raise ForbiddenTarget("the URL has no host")
        self.resolve(parts.hostname, port)

    def resolve(self, host: str, port: int) -> str:
        """The address to connect to for `host`: every address it resolves to must be allowed."""
        host = host.lower().strip("[]")
        addresses = self.resolver(host, port)
        if not addresses:
            raise ForbiddenTarget(f"host {host!r} does not resolve")
        if host in self.allowed_hosts:
            return addresses[0]
        for text in addresses:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            if not is_public(address):
                raise ForbiddenTarget(
                    f"host {host!r} resolves to {address}, a non-public address; "
                    "webhooks may only target public hosts (or hosts in SHOW1_WEBHOOK_ALLOWED_HOSTS)"
                )
        return addresses[0]


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses the policy allows."""

    def __init__(self, policy: EgressPolicy) -> None:
        from httpcore._backends.auto import AutoBackend

        self._inner = AutoBackend()
        self._policy = policy

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            address = await anyio.to_thread.run_sync(self._policy.resolve, host, port)
        except ForbiddenTarget as error:
            raise httpcore.ConnectError(str(error)) from error
        return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not a webhook target")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """An httpx transport that resolves, checks and connects in one step, ignoring proxy settings."""

    def __init__(self, policy: EgressPolicy) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            network_backend=_GuardedBackend(policy),
        )
