"""The control plane's connections to addresses its users choose: webhook URLs, the repositories that the git
proxy reaches with a brokered credential, and what a template names to fetch at push (a dev container
repository, OCI features). All are made from the server's own place in the network, so a user who names
`http://169.254.169.254/…` (a cloud's instance metadata, with its credentials) or a service that only the
server's network can reach would have the server fetch it for them.

Addresses in the denied ranges are refused after the name is resolved, and the connection is made to the very
address that was checked: a name that resolves to a denied address, or changes to one between a check and the
connection (DNS rebinding), is refused too. Always denied: "this host" (0.0.0.0/8, ::) and the link-local
ranges, where clouds serve instance metadata. Operators add the ranges their network keeps private
(`--outbound-deny`, e.g. loopback or the cluster's service range); docs/SECURITY.md.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Info = tuple[Any, Any, Any, Any, tuple[Any, ...]]
# Only the address families this host has, as a connection would use.
RESOLVE = socket.AI_ADDRCONFIG

ALWAYS_DENIED = (
    "0.0.0.0/8",
    "::/128",
    "169.254.0.0/16",
    "fe80::/10",
    # AWS's instance metadata on IPv6, and Alibaba Cloud's (inside the shared 100.64.0.0/10).
    "fd00:ec2::254/128",
    "100.100.100.200/32",
)


class OutboundDenied(httpx.ConnectError):
    """The destination resolves to an address in a denied range; nothing was sent to it."""


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs (or single addresses); ValueError names the entry that is neither."""
    networks = []
    for value in (v.strip() for v in values):
        if not value:
            continue
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an address range such as 127.0.0.0/8 or fd00::/8") from None
    return tuple(networks)


@dataclass(frozen=True)
class OutboundPolicy:
    """Where the control plane may connect on a user's behalf: everywhere but `denied`."""

    denied: tuple[Network, ...] = parse_networks(ALWAYS_DENIED)

    @classmethod
    def with_denied(cls, extra: Iterable[str]) -> OutboundPolicy:
        return cls(parse_networks(ALWAYS_DENIED) + parse_networks(extra))

    def refusal(self, address: str) -> str | None:
        """Why the server does not connect to this address, or None when it does."""
        ip: Address = ipaddress.ip_address(address.split("%", 1)[0])
        # ::ffff:169.254.169.254 reaches 169.254.169.254.
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        for network in self.denied:
            if ip.version == network.version and ip in network:
                return f"{address} is in {network}, a range this server does not connect to for its users"
        return None

    def literal_refusal(self, host: str) -> str | None:
        """For a host that is an address: why it is refused (checked when a URL is registered)."""
        try:
            return self.refusal(host.strip("[]"))
        except ValueError:
            return None  # a name: checked at each connection

    def names_refusal(self, host: str, addresses: list[str]) -> str | None:
        """Why a name that resolved to these addresses is refused, or None."""
        # One denied address refuses the name: a name that mixes one in is not a mistake.
        for address in addresses:
            reason = self.refusal(address)
            if reason is not None:
                return f"{host}: {reason}" if address != host else reason
        return None if addresses else f"{host} has no address"


# A server's without `--outbound-deny`: "this host" and the link-local ranges only.
DEFAULT_POLICY = OutboundPolicy()


def _checked_addresses(
    policy: OutboundPolicy, host: str, infos: Iterable[Info], request: httpx.Request | None = None
) -> list[str]:
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    reason = policy.names_refusal(host, addresses)
    if reason is not None:
        raise OutboundDenied(reason, request=request)
    return addresses


def resolve_checked(policy: OutboundPolicy, host: str, port: int) -> list[str]:
    """The addresses a connection to `host` may use, for a program that connects by itself (git), to be pinned
    to them. OutboundDenied when any is in a denied range; OSError when the name does not resolve."""
    return _checked_addresses(
        policy, host, socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=RESOLVE)
    )


def _attempts(request: httpx.Request, addresses: list[str]) -> Iterator[httpx.Request]:
    """The request sent to each checked address in turn (as a connection tries a name's addresses): the Host
    header stays the name, and TLS sends and checks the name."""
    url = request.url
    if url.scheme == "https":
        request.extensions = {**request.extensions, "sni_hostname": url.host}
    for address in addresses:
        request.url = url.copy_with(host=address)
        yield request


class GuardedTransport(httpx.BaseTransport):
    """A transport that refuses denied destinations and connects to the addresses it checked.

    A pool keys its connections by address, and two names may share one (a CDN's): a connection whose TLS was
    checked for one name must not carry another's requests. So without `inner` each name gets a pool of its own,
    and a client may follow redirects to other hosts (a registry's blobs); an `inner` given is used for every
    host, for a client that talks to one (a webhook)."""

    def __init__(self, policy: OutboundPolicy, inner: httpx.BaseTransport | None = None) -> None:
        self.policy = policy
        self.inner = inner
        self._pools: dict[tuple[str, str, int | None], httpx.BaseTransport] = {}

    def _pool(self, request: httpx.Request) -> httpx.BaseTransport:
        if self.inner is not None:
            return self.inner
        key = (request.url.scheme, request.url.host, request.url.port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = httpx.HTTPTransport()
        return pool

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        pool = self._pool(request)
        host = request.url.host
        try:
            infos = socket.getaddrinfo(host, request.url.port or 0, type=socket.SOCK_STREAM, flags=RESOLVE)
        except OSError as exc:
            raise httpx.ConnectError(f"cannot resolve {host}: {exc}", request=request) from exc
        failed: httpx.ConnectError | None = None
        for attempt in _attempts(request, _checked_addresses(self.policy, host, infos, request)):
            try:
                return pool.handle_request(attempt)
            except httpx.ConnectError as exc:  # nothing was sent: the next address may answer
                failed = exc
        assert failed is not None
        raise failed

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        if self.inner is not None:
            self.inner.close()


class AsyncGuardedTransport(httpx.AsyncBaseTransport):
    """GuardedTransport for asyncio, with one transport for every host (the git proxy's client talks to one)."""

    def __init__(self, policy: OutboundPolicy, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self.policy = policy
        self.inner = inner or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        try:
            infos = await anyio.getaddrinfo(
                host, request.url.port or 0, type=socket.SOCK_STREAM, flags=RESOLVE
            )
        except OSError as exc:
            raise httpx.ConnectError(f"cannot resolve {host}: {exc}", request=request) from exc
        failed: httpx.ConnectError | None = None
        for attempt in _attempts(request, _checked_addresses(self.policy, host, infos, request)):
            try:
                return await self.inner.handle_async_request(attempt)
            except httpx.ConnectError as exc:  # nothing was sent: the next address may answer
                failed = exc
        assert failed is not None
        raise failed

    async def aclose(self) -> None:
        await self.inner.aclose()
