"""The Dockyard git proxy: git's smart-HTTP protocol, served on a stream from a workspace's agent and forwarded
to the workspace's repository with its owner's credential added on the way.

It is how `git.push: task-branch` is enforced where git cannot bypass it (docs/SECURITY.md, "Git credentials"):
the credential never enters the workspace, so every push with it passes here, and a `git-receive-pack` request
is read up to the end of its ref-update commands and refused, before a byte is forwarded, unless every command
updates `refs/heads/<task branch>`. Only the three smart-HTTP endpoints of that one repository are forwarded.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx

from dockyard import logs as logging
from dockyard.gitauth import pktline
from dockyard.gitauth.pktline import RefUpdate
from dockyard.outbound import AsyncGuardedTransport, OutboundPolicy

log = logging.get(__name__)

SERVICES = ("git-upload-pack", "git-receive-pack")
MAX_HEAD = 64 << 10
# A fetch may wait long for the server to compute a pack; connecting may not.
UPSTREAM_TIMEOUT = httpx.Timeout(300.0, connect=15.0)
# Connects that fail are tried again (nothing was sent yet, so any request may be): a git host whose listen
# queue overflows when a fleet clones at once drops connects, and one dropped clone is a failed workspace.
UPSTREAM_CONNECT_RETRIES = 2
_PASSED_UP = ("content-type", "accept", "git-protocol", "user-agent", "accept-encoding", "content-encoding")
_PASSED_DOWN = ("content-type", "cache-control", "expires", "pragma", "content-encoding")


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every upstream connection, made at first use with httpx's defaults (certifi, or
    SSL_CERT_FILE/SSL_CERT_DIR). A client made with none loads the CA bundle itself: ~70 ms of CPU on the
    hub's event loop per git connection, which a fleet's clones and pushes paid one after another."""
    return httpx.create_ssl_context()


@dataclass(frozen=True)
class Upstream:
    """Where a workspace's git goes: its repository, its task branch, the header that authenticates it there;
    or `error`, why it cannot (no credential registered, …), which git prints."""

    repo: str = ""
    branch: str = ""
    authorization: str = ""
    error: str = ""

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.repo).netloc


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


# Told about every push: its updates and the refusals (empty when it was forwarded).
OnPush = Callable[[tuple[RefUpdate, ...], dict[str, str]], Awaitable[None]]


def refusals(updates: tuple[RefUpdate, ...], branch: str) -> dict[str, str]:
    """The updates the task-branch limit refuses, with git's reason for each: anything but the task branch,
    deletes and tags included."""
    allowed = f"refs/heads/{branch}" if branch else ""
    reason = (
        f"dockyard: this workspace may push only its task branch {allowed}"
        if allowed
        else "dockyard: this workspace has no task branch to push to"
    )
    return {u.ref: reason for u in updates if u.ref != allowed}


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, list[str]]
    version: str
    headers: dict[str, str]

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        return self.version == "HTTP/1.1" and connection != "close"


async def serve(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    upstream: Upstream,
    *,
    on_push: OnPush | None = None,
    outbound: OutboundPolicy,
) -> None:
    """Answer HTTP/1.1 requests from the stream until it closes (git keeps connections alive)."""
    # A client per connection (no cookie or connection of one workspace's git reaches another's), sharing the
    # TLS context.
    transport = AsyncGuardedTransport(
        outbound, httpx.AsyncHTTPTransport(verify=_tls(), retries=UPSTREAM_CONNECT_RETRIES)
    )
    async with httpx.AsyncClient(
        timeout=UPSTREAM_TIMEOUT, follow_redirects=False, transport=transport
    ) as client:
        while True:
            request = await _read_request(reader)
            if request is None:
                return
            body = _body(reader, request.headers)
            if request.headers.get("expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            try:
                await _handle(request, body, writer, upstream, client=client, on_push=on_push)
            finally:
                # Whatever was not forwarded is read off, so the next request starts where it should.
                async for _ in body:
                    pass
            await writer.drain()
            if not request.keep_alive:
                return


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None
    if len(head) > MAX_HEAD:
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    split = urllib.parse.urlsplit(target)
    return _Request(method, split.path, urllib.parse.parse_qs(split.query), version, headers)


async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> AsyncIterator[bytes]:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return
            data = await reader.readexactly(size)
            await reader.readexactly(2)
            yield data
    remaining = int(headers.get("content-length", "0") or 0)
    while remaining > 0:
        chunk = await reader.read(min(remaining, 1 << 16))
        if not chunk:
            raise asyncio.IncompleteReadError(b"", remaining)
        remaining -= len(chunk)
        yield chunk


def _endpoint(request: _Request) -> tuple[str, str] | None:
    """(endpoint, service) of a smart-HTTP request, or None for anything else."""
    path = request.path.strip("/")
    if request.method == "GET" and path == "info/refs":
        service = (request.query.get("service") or [""])[0]
        return (path, service) if service in SERVICES else None
    if request.method == "POST" and path in SERVICES:
        return path, path
    return None


async def _handle(
    request: _Request,
    body: AsyncIterator[bytes],
    writer: asyncio.StreamWriter,
    upstream: Upstream,
    *,
    client: httpx.AsyncClient,
    on_push: OnPush | None,
) -> None:
    endpoint = _endpoint(request)
    if endpoint is None:
        _respond(writer, 404, b"dockyard: only git's smart HTTP protocol is served here\n")
        return
    path, service = endpoint
    if upstream.error:
        _refuse(writer, path, service, upstream.error)
        return
    content: AsyncIterator[bytes] | None = None
    if path == "git-receive-pack":
        if request.headers.get("content-encoding", "identity").lower() != "identity":
            _respond(writer, 415, b"dockyard: compressed push requests are not supported\n")
            return
        try:
            commands = await pktline.read_commands(body)
        except pktline.PktError as exc:
            _respond(writer, 400, f"dockyard: {exc}\n".encode())
            return
        refused = refusals(commands.updates, upstream.branch)
        if on_push is not None:
            await on_push(commands.updates, refused)
        if refused:
            _send(
                writer,
                200,
                pktline.refusal_report(commands.updates, refused, commands.capabilities),
                content_type="application/x-git-receive-pack-result",
            )
            return
        content = _prefixed(commands.head, body)
    elif request.method == "POST":
        content = body
    headers = {name: request.headers[name] for name in _PASSED_UP if name in request.headers}
    if "content-length" in request.headers and "chunked" not in request.headers.get("transfer-encoding", ""):
        headers["content-length"] = request.headers["content-length"]
    if upstream.authorization:
        headers["authorization"] = upstream.authorization
    url = upstream.repo.rstrip("/") + "/" + path + (f"?service={service}" if path == "info/refs" else "")
    try:
        response = await client.send(
            client.build_request(request.method, url, headers=headers, content=content), stream=True
        )
    except httpx.HTTPError as exc:
        # git shows only the status of a refused POST, so the reason is in the server's log too.
        log.warning("git proxy: cannot reach the git host", host=upstream.host, error=repr(exc))
        _refuse(writer, path, service, f"dockyard: cannot reach {upstream.host}: {exc}")
        return
    try:
        if response.status_code in (401, 403) and path == "info/refs":
            _refuse(
                writer,
                path,
                service,
                f"dockyard: {upstream.host} refused the registered credential (HTTP {response.status_code}); "
                f"run `dockyard git-auth add {upstream.host}` to replace it",
            )
            return
        head = [f"HTTP/1.1 {response.status_code} {response.reason_phrase}"]
        head += [f"{name}: {response.headers[name]}" for name in _PASSED_DOWN if name in response.headers]
        head.append("Transfer-Encoding: chunked")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        async for chunk in response.aiter_raw():
            if chunk:
                writer.write(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                await writer.drain()
        writer.write(b"0\r\n\r\n")
    except httpx.HTTPError as exc:
        log.info("git proxy: upstream broke off", host=upstream.host, error=str(exc))
        writer.close()
    finally:
        await response.aclose()


async def _prefixed(head: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield head
    async for chunk in rest:
        yield chunk


def _refuse(writer: asyncio.StreamWriter, path: str, service: str, message: str) -> None:
    if path == "info/refs":
        # A 200 advertisement holding only an ERR line: the one refusal git prints as the server's words.
        _send(
            writer,
            200,
            pktline.error_advertisement(message),
            content_type=f"application/x-{service}-advertisement",
        )
    else:
        _respond(writer, 502, f"{message}\n".encode())


def _respond(writer: asyncio.StreamWriter, status: int, text: bytes) -> None:
    _send(writer, status, text, content_type="text/plain; charset=utf-8")


def _send(writer: asyncio.StreamWriter, status: int, body: bytes, *, content_type: str) -> None:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 415: "Unsupported Media Type"}.get(
        status, "Error"
    )
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nCache-Control: no-cache\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
