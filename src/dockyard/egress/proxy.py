"""The HTTP side of the egress proxy: `CONNECT host:port` tunnels and plain HTTP requests (absolute-form, or
origin-form with `Host`), each checked against the workspace's allow-list before anything is dialled.

Once a request is allowed the client's connection is joined to the upstream for good: whatever the client sends
afterwards (a second request on a kept-alive connection included) can only reach the host that was checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from dockyard.egress.policy import Policy

MAX_HEAD = 64 * 1024
HEAD_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0
# Hop-by-hop headers a forwarding proxy must not pass on (RFC 9110 7.6.1), and the proxy's own.
_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer", "upgrade"}


@dataclass(frozen=True)
class Attempt:
    protocol: str  # connect | http | tls | tcp | dns
    host: str
    port: int
    decision: str  # allowed | denied | failed
    reason: str = ""


Resolve = Callable[[str], Awaitable[list[str]]]
Record = Callable[[Attempt], None]
# Why an upstream address must not be dialled on a workspace's behalf ("" when it may be).
Screen = Callable[[str], str]


class BadRequest(ValueError):
    pass


@dataclass(frozen=True)
class Request:
    method: str
    host: str
    port: int
    protocol: str
    head: bytes  # what to send upstream (empty for CONNECT)


def split_host(authority: str, default_port: int) -> tuple[str, int]:
    if authority.startswith("["):
        raise BadRequest("IPv6 addresses are not supported")
    host, sep, port = authority.rpartition(":")
    if not sep:
        return authority.lower(), default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise BadRequest(f"bad port in {authority!r}")
    return host.lower(), int(port)


def parse_head(head: bytes) -> Request:
    text = head.decode("latin-1")
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise BadRequest("not an HTTP request")
    method, target, version = parts
    headers = [line for line in lines[1:] if line]
    if method == "CONNECT":
        host, port = split_host(target, 443)
        return Request(method, host, port, "connect", b"")
    host_header = next((h.split(":", 1)[1].strip() for h in headers if h.lower().startswith("host:")), "")
    if target.startswith("http://"):
        authority, _, path = target[len("http://") :].partition("/")
        path = "/" + path
    elif target.startswith("/"):
        authority, path = host_header, target
    else:
        raise BadRequest("only http:// URLs and CONNECT go through this proxy (use CONNECT for https)")
    if not authority or "@" in authority:
        raise BadRequest("the request names no host")
    host, port = split_host(authority, 80)
    kept = [h for h in headers if h.split(":", 1)[0].strip().lower() not in _HOP]
    if not any(h.lower().startswith("host:") for h in kept):
        kept.insert(0, f"Host: {authority}")
    upstream = "\r\n".join([f"{method} {path} {version}", *kept, "Connection: close", "", ""])
    return Request(method, host, port, "http", upstream.encode("latin-1"))


async def reply(writer: asyncio.StreamWriter, status: str, text: str) -> None:
    body = (text + "\n").encode()
    writer.write(
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(ConnectionError):
        await writer.drain()


async def read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Request | None:
    """The client's request head, parsed; None when the client went away, was too slow, or sent a head that
    is not HTTP (then it got a 400 saying why)."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
        return None
    try:
        return parse_head(head)
    except BadRequest as exc:
        await reply(writer, "400 Bad Request", f"Dockyard egress proxy: {exc}")
        return None


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def serve(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    policy: Callable[[], Policy],
    resolve: Resolve,
    screen: Screen,
    record: Record,
) -> None:
    """One client connection of the HTTP proxy."""
    try:
        request = await read_request(reader, writer)
        if request is None:
            return
        if not policy().allows(request.host, request.port):
            record(Attempt(request.protocol, request.host, request.port, "denied", "not in the allow-list"))
            await reply(
                writer,
                "403 Forbidden",
                f"Dockyard egress proxy: {request.host}:{request.port} is not in this workspace's allow-list",
            )
            return
        upstream = await dial(request, resolve=resolve, screen=screen, record=record)
        if upstream is None:
            await reply(writer, "502 Bad Gateway", f"Dockyard egress proxy: cannot reach {request.host}")
            return
        up_reader, up_writer = upstream
        record(Attempt(request.protocol, request.host, request.port, "allowed"))
        if request.method == "CONNECT":
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            up_writer.write(request.head)
        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            up_writer.close()
    finally:
        writer.close()


async def dial(
    request: Request, *, resolve: Resolve, screen: Screen, record: Record
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    try:
        ipaddress.IPv4Address(request.host)
        addresses = [request.host]
    except ValueError:
        try:
            addresses = await resolve(request.host)
        except OSError as exc:
            record(Attempt(request.protocol, request.host, request.port, "failed", f"cannot resolve: {exc}"))
            return None
    problem = "no address"
    refusals = [reason for reason in map(screen, addresses) if reason]
    if refusals and len(refusals) == len(addresses):
        record(Attempt(request.protocol, request.host, request.port, "denied", refusals[0][:200]))
        return None
    for address in (a for a in addresses if not screen(a)):
        try:
            return await asyncio.wait_for(asyncio.open_connection(address, request.port), CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            problem = f"{address}: {exc or 'timed out'}"
    record(Attempt(request.protocol, request.host, request.port, "failed", problem[:200]))
    return None
