"""The intercepting side of the egress proxy: every TCP connection a workspace opens to an address outside its
own network, redirected here by the host firewall (`runtimes/docker/firewall.py`, the nat REDIRECT rule), whether
or not the program knows of a proxy. The address and port it was meant for come from the kernel
(SO_ORIGINAL_DST); what it is checked against depends on the port:

- 443: the server name of the TLS ClientHello (SNI). An allowed name is dialled as the proxy resolves it, not
  at the address the client chose, so a made-up SNI cannot carry a connection to an address the list does not
  name.
- 80: the request's `Host`, as the plain HTTP proxy checks it.
- any port, and 80/443 when the name is missing or not allowed: the address. It is allowed when an address entry
  (CIDR) covers it on that port, or when this workspace's DNS responder gave it out for a name the list allows
  on that port ("names for other ports": `github.com:22` lets `ssh github.com` through).

The TCP handshake with the client is complete before anything is known, so a refused connection is accepted and
closed at once (a 403 first for HTTP); every decision is logged like the proxy's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
from collections.abc import Callable

from dockyard.egress import sni
from dockyard.egress.policy import Policy
from dockyard.egress.proxy import (
    HEAD_TIMEOUT,
    Attempt,
    Record,
    Request,
    Resolve,
    Screen,
    dial,
    pipe,
    read_request,
    reply,
)

# linux/netfilter_ipv4.h: the destination a connection had before NAT redirected it.
SO_ORIGINAL_DST = 80
HTTP_PORT = 80
TLS_PORT = 443

# The names this workspace's DNS responder answered with an address.
Names = Callable[[str], tuple[str, ...]]


def original_destination(writer: asyncio.StreamWriter) -> tuple[str, int] | None:
    sock = writer.get_extra_info("socket")
    try:
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    except OSError:
        return None
    port, packed = struct.unpack("!2xH4s8x", raw)
    return str(ipaddress.IPv4Address(packed)), port


def by_address(policy: Policy, address: str, port: int, names: Names) -> str:
    """What allows a connection to `address:port`: the allowed name it was given out for, the address itself
    for an address entry, or "" when nothing does."""
    for name in names(address):
        if policy.allows(name, port):
            return name
    return address if policy.allows(address, port) else ""


async def serve(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    destination: tuple[str, int],
    policy: Callable[[], Policy],
    names: Names,
    resolve: Resolve,
    screen: Screen,
    record: Record,
) -> None:
    """One redirected connection, meant for `destination`."""
    address, port = destination
    try:
        first = b""
        name, protocol = "", "tcp"
        if port == TLS_PORT:
            protocol = "tls"
            try:
                first, name = await asyncio.wait_for(sni.read_hello(reader), HEAD_TIMEOUT)
            except sni.NotTls as exc:
                first, protocol = exc.raw, "tcp"
            except (TimeoutError, ConnectionError):
                return
        elif port == HTTP_PORT:
            protocol = "http"
            request = await read_request(reader, writer)
            if request is None:
                return
            name, first = request.host, request.head
        current = policy()
        if name and current.allows(name, port):
            # Dialled by name, at the port the client meant whatever the Host header says.
            target = Request("", name, port, protocol, b"")
            shown = name
        else:
            shown = by_address(current, address, port, names)
            target = Request("", address, port, protocol, b"")
        if not shown:
            asked = name or address
            record(Attempt(protocol, asked, port, "denied", "not in the allow-list"))
            if protocol == "http":
                await reply(
                    writer,
                    "403 Forbidden",
                    f"Dockyard egress proxy: {asked}:{port} is not in this workspace's allow-list",
                )
            return
        upstream = await dial(target, resolve=resolve, screen=screen, record=record)
        if upstream is None:
            if protocol == "http":
                await reply(writer, "502 Bad Gateway", f"Dockyard egress proxy: cannot reach {shown}")
            return
        up_reader, up_writer = upstream
        record(Attempt(protocol, shown, port, "allowed"))
        up_writer.write(first)
        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            up_writer.close()
    finally:
        with contextlib.suppress(OSError):
            writer.close()
