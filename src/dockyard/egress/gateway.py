"""`EgressGateway`: the egress proxy of one control-plane process, serving every `allowlist` workspace whose
network this process opened.

Per workspace it listens on the workspace network's gateway address (the host's side of the workspace's own
bridge, which nothing else on the engine can reach): the HTTP proxy on `proxy_port` and a DNS responder on
`dns_port` (UDP), and the intercepting listener on `intercept_port`, where the host firewall redirects every other
TCP connection the workspace opens (`intercept.py`: checked by TLS SNI on 443, `Host` on 80, the address
otherwise). The listener a connection arrives on names its workspace, as the hub's per-workspace socket
does for agents; a peer outside the workspace's subnet is dropped anyway. The workspace network is internal, and
the host firewall lets it reach only these ports on its own gateway (`runtimes/docker`), so this is its only
way out.

Upstream names resolve through static entries (`hosts`, the deployment's `--egress-host NAME=IP`) and then the
host's resolver. Addresses of this host, loopback, link-local, multicast and the workspace subnets are never
dialled, whatever a name resolves to: an allowed name must not become a way back into the host or to another
workspace.

Runs its own event loop on a thread, so it serves the same whether the server's loop or a provisioner's worker
threads opened a workspace; every attempt goes to `record` (the connection log, `egress/log.py`).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, cast

from dockyard import logs
from dockyard.egress import dns, intercept
from dockyard.egress.policy import Policy
from dockyard.egress.proxy import Attempt, serve
from dockyard.runtimes.base import RuntimeFailure

log = logs.get(__name__)

PROXY_PORT = 3128
INTERCEPT_PORT = 3129
DNS_PORT = 53
_NEVER = (
    ipaddress.IPv4Network("0.0.0.0/8"),
    ipaddress.IPv4Network("127.0.0.0/8"),
    ipaddress.IPv4Network("169.254.0.0/16"),
    ipaddress.IPv4Network("224.0.0.0/3"),
)

# How many answers each workspace's memory keeps (the oldest go first): a CDN address shared by many names.
_ANSWERS_KEPT = 4096
_NAMES_PER_ADDRESS = 16

# (workspace id, attempt) for every connection and DNS question.
Recorder = Callable[[str, Attempt], None]


@dataclass
class _Listener:
    workspace_id: str
    address: str
    subnet: ipaddress.IPv4Network
    policy: Policy
    servers: list[Any] = field(default_factory=list)
    # Address -> the allowed names the DNS responder gave it out for, newest last (intercept.by_address).
    answered: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def remember(self, name: str, addresses: list[str]) -> None:
        for address in addresses:
            names = (*(n for n in self.answered.pop(address, ()) if n != name), name)
            self.answered[address] = names[-_NAMES_PER_ADDRESS:]
        while len(self.answered) > _ANSWERS_KEPT:
            del self.answered[next(iter(self.answered))]

    def names(self, address: str) -> tuple[str, ...]:
        return self.answered.get(address, ())


class EgressGateway:
    def __init__(
        self,
        record: Recorder,
        *,
        hosts: Mapping[str, str] | None = None,
        forbidden: tuple[str, ...] = (),
        proxy_port: int = PROXY_PORT,
        dns_port: int = DNS_PORT,
        intercept_port: int = INTERCEPT_PORT,
    ) -> None:
        self.record = record
        self.hosts = {name.lower().rstrip("."): address for name, address in (hosts or {}).items()}
        self.forbidden = tuple(ipaddress.IPv4Network(n) for n in forbidden)
        self.proxy_port = proxy_port
        self.dns_port = dns_port
        self.intercept_port = intercept_port
        self._listeners: dict[str, _Listener] = {}
        self._stopped = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="egress-gateway", daemon=True)
        self._thread.start()

    # -- called by the runtime (any thread) -------------------------------------------------------------

    def open(self, workspace_id: str, *, address: str, subnet: str, allow: tuple[str, ...]) -> None:
        """Serve the workspace on its gateway address with this allow-list (a new list replaces the old)."""
        policy = Policy.of(allow)
        self._call(self._open(workspace_id, address, ipaddress.IPv4Network(subnet, strict=False), policy))

    def close(self, workspace_id: str) -> None:
        if not self._stopped:
            self._call(self._close(workspace_id))

    def serving(self) -> set[str]:
        return set(self._listeners)

    def stop(self) -> None:
        for workspace_id in list(self._listeners):
            self.close(workspace_id)
        # Workspaces deleted after this (a runtime outliving its server, in tests) have nothing left to close.
        self._stopped = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def _call(self, coroutine: Any) -> Any:
        if self._stopped:
            coroutine.close()
            raise RuntimeFailure("The egress proxy of this process has stopped.")
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=30)

    # -- on the gateway's loop --------------------------------------------------------------------------

    async def _open(
        self, workspace_id: str, address: str, subnet: ipaddress.IPv4Network, policy: Policy
    ) -> None:
        current = self._listeners.get(workspace_id)
        if current is not None and current.address == address:
            current.policy = policy
            current.subnet = subnet
            return
        if current is not None:
            await self._close(workspace_id)
        listener = _Listener(workspace_id, address, subnet, policy)
        loop = asyncio.get_running_loop()
        try:
            listener.servers.append(
                await asyncio.start_server(
                    lambda r, w: self._proxy(listener, r, w), address, self.proxy_port, reuse_address=True
                )
            )
            listener.servers.append(
                await asyncio.start_server(
                    lambda r, w: self._intercept(listener, r, w),
                    address,
                    self.intercept_port,
                    reuse_address=True,
                )
            )
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _DnsProtocol(self, listener), local_addr=(address, self.dns_port)
            )
            listener.servers.append(transport)
        except OSError as exc:
            for server in listener.servers:
                server.close()
            # EADDRINUSE: another process of this deployment (a `dockyard provisioner` beside the server)
            # serves the workspace, or a host service holds the port on every address. Either way this process
            # cannot, and a start must not pretend it can.
            hint = " (is another process listening on it?)" if exc.errno == errno.EADDRINUSE else ""
            raise RuntimeFailure(
                f"The egress proxy cannot listen on {address} ports {self.proxy_port}, {self.intercept_port} and "
                f"{self.dns_port}: "
                f"{exc.strerror or exc}{hint}.",
            ) from exc
        self._listeners[workspace_id] = listener

    async def _close(self, workspace_id: str) -> None:
        listener = self._listeners.pop(workspace_id, None)
        if listener is None:
            return
        for server in listener.servers:
            server.close()

    async def _proxy(
        self, listener: _Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = writer.get_extra_info("peername")
        if not peer or ipaddress.IPv4Address(peer[0]) not in listener.subnet:
            writer.close()
            return
        await serve(
            reader,
            writer,
            policy=lambda: listener.policy,
            resolve=self.resolve,
            screen=self.screen,
            record=lambda attempt: self._record(listener.workspace_id, attempt),
        )

    async def _intercept(
        self, listener: _Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = writer.get_extra_info("peername")
        destination = intercept.original_destination(writer)
        if not peer or ipaddress.IPv4Address(peer[0]) not in listener.subnet or destination is None:
            writer.close()
            return
        if destination == (listener.address, self.intercept_port):
            # Asked for by its own address, not redirected: there is nothing to check it against.
            writer.close()
            return
        await intercept.serve(
            reader,
            writer,
            destination=destination,
            policy=lambda: listener.policy,
            names=listener.names,
            resolve=self.resolve,
            screen=self.screen,
            record=lambda attempt: self._record(listener.workspace_id, attempt),
        )

    def _record(self, workspace_id: str, attempt: Attempt) -> None:
        try:
            self.record(workspace_id, attempt)
        except RuntimeError as exc:  # a recorder that is shutting down
            log.warning("egress event lost", workspace=workspace_id, error=str(exc))

    async def resolve(self, name: str) -> list[str]:
        """IPv4 addresses of an allowed name: static entries first, then the host's resolver."""
        key = name.lower().rstrip(".")
        if key in self.hosts:
            return [self.hosts[key]]
        infos = await asyncio.get_running_loop().getaddrinfo(key, None, family=socket.AF_INET)
        return list(dict.fromkeys(str(info[4][0]) for info in infos))

    def screen(self, address: str) -> str:
        ip = ipaddress.IPv4Address(address)
        if any(ip in network for network in _NEVER):
            return f"{address} is a loopback, link-local or multicast address"
        if any(ip in network for network in self.forbidden):
            return f"{address} is in the workspace networks"
        if _is_local(address):
            return f"{address} is an address of the Dockyard host"
        return ""


def _is_local(address: str) -> bool:
    """Whether the address is one of this host's own (binding to it works only then)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


class _DnsProtocol(asyncio.DatagramProtocol):
    """Answers the workspace's resolver (Docker's embedded DNS forwards to it): A records for allowed names,
    NXDOMAIN for the rest."""

    def __init__(self, gateway: EgressGateway, listener: _Listener) -> None:
        self.gateway = gateway
        self.listener = listener
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if ipaddress.IPv4Address(addr[0]) not in self.listener.subnet:
            return
        asyncio.get_running_loop().create_task(self._answer(data, addr))

    async def _answer(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        try:
            question = dns.parse(data)
        except dns.Malformed:
            reply = dns.error(data, dns.FORMERR)
            if reply:
                self.transport.sendto(reply, addr)
            return
        record = self.gateway._record
        workspace = self.listener.workspace_id
        if not self.listener.policy.resolves(question.name):
            record(workspace, Attempt("dns", question.name, 0, "denied", "not in the allow-list"))
            self.transport.sendto(dns.answer(question, dns.NXDOMAIN), addr)
            return
        if question.qtype != dns.TYPE_A:
            # Workspace networks are IPv4 only: AAAA and other types have no answer, but the name exists.
            self.transport.sendto(dns.answer(question, dns.NOERROR), addr)
            return
        try:
            addresses = [a for a in await self.gateway.resolve(question.name) if not self.gateway.screen(a)]
        except OSError as exc:
            record(workspace, Attempt("dns", question.name, 0, "failed", f"cannot resolve: {exc}"[:200]))
            self.transport.sendto(dns.answer(question, dns.NXDOMAIN), addr)
            return
        record(workspace, Attempt("dns", question.name, 0, "allowed"))
        self.listener.remember(question.name, addresses)
        self.transport.sendto(dns.answer(question, dns.NOERROR, tuple(addresses)), addr)
