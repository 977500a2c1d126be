"""The Dockyard workspace agent (protocol 1, see docs/AGENT_PROTOCOL.md).

This one file is copied into every workspace and run there as the workspace user with the image's own
`python3` (3.9 or newer), so it uses the standard library only and imports nothing from `dockyard`. It never
listens: it dials the control plane's unix socket, keeps one control connection open (re-dialing forever), and
dials one more connection per stream the control plane asks for (exec, reconnecting terminals, port dials and
file transfers). The one exception to "never listens": a unix socket private to the workspace user
(`$DOCKYARD_TASK_SOCKET`) where `dockyard-agent report` hands the agent a coding task's state.

Everything runs on one asyncio loop. A PTY master and a child's pipes are read with non-blocking callbacks, and
output is paused while a peer is slow, so one busy stream cannot stall the others nor grow without bound.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any, Literal

# How long a git credential request may wait for the control plane.
CREDENTIAL_TIMEOUT = 20.0
# A coding task's states, as `dockyard-agent report` takes them and the API shows them.
TASK_STATES = ("working", "idle", "waiting_input", "done", "failed")
TASK_SUMMARY_MAX = 2000
TASK_LINKS_MAX = 10
TASK_SOCKET_ENV = "DOCKYARD_TASK_SOCKET"
# How long `dockyard-agent report` and the agent wait for each other on the task socket. The agent answers at
# once (it does not wait for the control plane), so this only ends a wait on an agent that hangs; on a host
# running 200 agents on 2 cores, a healthy agent and the report command took over 10 s to be scheduled.
TASK_SOCKET_TIMEOUT = 60.0


def encode_json(obj: Any) -> bytes:
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:
        # A file name that is not UTF-8 decodes to lone surrogates; ASCII escapes keep it round-trippable.
        return json.dumps(obj, separators=(",", ":")).encode()


def decode_json(payload: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(payload)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def check_task_report(message: dict[str, Any]) -> dict[str, Any] | str:
    """The task report to forward, or what is wrong with it."""
    state = message.get("state")
    if state not in TASK_STATES:
        return f"state must be one of {', '.join(TASK_STATES)}, not {state!r}"
    summary = message.get("summary", "")
    if not isinstance(summary, str) or len(summary) > TASK_SUMMARY_MAX:
        return f"summary must be text of at most {TASK_SUMMARY_MAX} characters"
    links = message.get("links", [])
    if not isinstance(links, list) or len(links) > TASK_LINKS_MAX:
        return f"at most {TASK_LINKS_MAX} links"
    for link in links:
        name = link.get("name") if isinstance(link, dict) else None
        url = link.get("url") if isinstance(link, dict) else None
        if not isinstance(name, str) or not 0 < len(name) <= 64:
            return "each link needs a name of 1 to 64 characters"
        if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > 2048:
            return f"link {name!r}: the URL must start with http:// or https://"
    return {"state": state, "summary": summary, "links": links}


def ask_agent(path: str, message: dict[str, Any], timeout: float) -> dict[str, Any] | None:
    """One question to this workspace's agent on its task socket; None (and why, on stderr) if unreachable."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(encode_json(message) + b"\n")
            return decode_json(sock.makefile("rb").readline().strip()) or {}
    except OSError as exc:
        print(f"dockyard-agent: cannot reach the workspace agent at {path}: {exc}", file=sys.stderr)
        return None


def git_credential_main(argv: list[str]) -> int:
    """`dockyard-agent git-credential get`: git's credential helper protocol, answered by the control plane
    through this workspace's agent. `store` and `erase` do nothing: there is nothing here to store."""
    fields: dict[str, str] = {}
    for line in sys.stdin:
        line = line.rstrip("\n")
        if not line:
            break
        key, _, value = line.partition("=")
        fields[key] = value
    if argv[:1] != ["get"]:
        return 0
    path = os.environ.get(TASK_SOCKET_ENV, "")
    if not path:
        print(f"dockyard-agent: ${TASK_SOCKET_ENV} is not set: no Dockyard agent to ask", file=sys.stderr)
        return 1
    ask = {"kind": "git-credential", "protocol": fields.get("protocol", ""), "host": fields.get("host", "")}
    answer = ask_agent(path, ask, CREDENTIAL_TIMEOUT + 10)
    if answer is None:
        return 1
    if not answer.get("ok"):
        # Git goes on without a credential and fails with its own message after this one.
        print(f"dockyard-agent: {answer.get('error', 'no credential')}", file=sys.stderr)
        return 0
    sys.stdout.write(f"username={answer.get('username', '')}\npassword={answer.get('password', '')}\n")
    return 0


REPORT_USAGE = """usage: dockyard-agent report STATE [SUMMARY] [--link NAME=URL]...

Tell Dockyard (and whoever waits on this workspace) what the coding task is doing.
STATE is one of: working, idle, waiting_input, done, failed.
Example: dockyard-agent report done "Fixed the flaky test" --link pr=https://git.example/org/app/pull/7"""


def report_main(argv: list[str]) -> int:
    """`dockyard-agent report ...`: hand a task state to this workspace's agent."""
    positional: list[str] = []
    links: list[dict[str, str]] = []
    args = iter(argv)
    for arg in args:
        if arg in ("-h", "--help"):
            print(REPORT_USAGE)
            return 0
        if arg == "--link" or arg.startswith("--link="):
            value = arg[len("--link=") :] if arg.startswith("--link=") else next(args, "")
            name, equals, url = value.partition("=")
            if not equals:
                print(f"dockyard-agent: --link takes NAME=URL, not {value!r}", file=sys.stderr)
                return 2
            links.append({"name": name, "url": url})
        else:
            positional.append(arg)
    if not 1 <= len(positional) <= 2:
        print(REPORT_USAGE, file=sys.stderr)
        return 2
    report = check_task_report(
        {"state": positional[0], "summary": positional[1] if len(positional) > 1 else "", "links": links}
    )
    if isinstance(report, str):
        print(f"dockyard-agent: {report}", file=sys.stderr)
        return 2
    path = os.environ.get(TASK_SOCKET_ENV, "")
    if not path:
        print(
            f"dockyard-agent: ${TASK_SOCKET_ENV} is not set: run this inside a Dockyard workspace",
            file=sys.stderr,
        )
        return 1
    answer = ask_agent(path, report, TASK_SOCKET_TIMEOUT)
    if answer is None:
        return 1
    if not answer.get("ok"):
        print(f"dockyard-agent: {answer.get('error', 'the agent refused the report')}", file=sys.stderr)
        return 1
    return 0


# `dockyard-agent report` and git's credential helper are this file too (one file to ship), but each call is a
# short process: started here, before the agent's own imports (asyncio alone is 20-30 ms of CPU), a report costs
# a bare interpreter's start. A fleet's agents report twice per task, all on the same 2 cores.
if __name__ == "__main__" and sys.argv[1:2] == ["report"]:
    sys.exit(report_main(sys.argv[2:]))
if __name__ == "__main__" and sys.argv[1:2] == ["git-credential"]:
    sys.exit(git_credential_main(sys.argv[2:]))

if (
    __name__ == "__main__"
    and "ssl" not in sys.modules
    and "https:" not in " ".join([*sys.argv, os.environ.get("DOCKYARD_URL", "")])
):
    # Over a unix socket or plain HTTP the agent never speaks TLS, and asyncio's optional `ssl` import loads
    # OpenSSL: about 4 MB of resident memory in every workspace. Without it asyncio simply has no TLS support,
    # a case it is built for. An https:// control plane loads it.
    sys.modules["ssl"] = None  # type: ignore[assignment]

import abc
import asyncio
import contextlib
import errno
import fcntl
import itertools
import pwd
import random
import signal
import stat
import struct
import subprocess
import termios
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine

VERSION = "0.1.0"
PROTOCOL = 1

# Frame types.
JSON = 1
STDIN = 2
STDOUT = 3
STDERR = 4
EOF = 5

_HEADER = struct.Struct(">BI")
MAX_FRAME = 1 << 20
# The longest a clone waits for the server's fetch of its repository's mirror before it clones over the network.
GIT_MIRROR_WAIT = 120.0
# A roll-up of the mirror's packs takes moments; past this the clone goes over the network instead.
GIT_MIRROR_LOCK_WAIT = 10.0
CHUNK = 256 * 1024
# Outbound bytes a connection may hold before the sender waits for the peer to read.
HIGH_WATER = 1 << 20
# Inbound buffer of a stream connection; a frame (≤ 1 MiB) must fit without pausing the transport.
READ_LIMIT = 4 << 20

# Re-dialing waits a random time up to the current ceiling ("full jitter"), which doubles per failure: agents
# that lost their replica together come back spread out instead of in one burst.
BACKOFF_MIN = 0.5
BACKOFF_MAX = 4.0
# Until its first welcome the agent is awaited: the workspace is not ready before it connects, so it must not
# sleep through the moment the control plane can take it. A private socket that is not there yet (the hub
# listens when the server gets to it) is tried again every FIRST_DIAL_POLL, as a failed connect to a unix
# socket costs one system call; a network link starts its backoff lower. Both for FIRST_DIAL_FAST at most.
FIRST_DIAL_POLL = 0.05
FIRST_BACKOFF_MIN = 0.1
FIRST_DIAL_FAST = 10.0
HELLO_TIMEOUT = 30.0
DIAL_TIMEOUT = 10.0
SHUTDOWN_SCRIPT_TIMEOUT = 10.0
FLUSH_TIMEOUT = 1.0
# How long a finished stream waits for the peer to close after our half-close.
LINGER = 2.0
# After a process exits, how long its output may stay silent before we stop waiting for it: a background
# child can hold the pipe or the PTY open forever.
EXIT_GRACE = 0.2
LOG_INTERVAL = 0.2
LOG_LINE_MAX = 4096
# Characters per log message; even fully escaped (6 bytes per character) this stays under MAX_FRAME.
LOG_BATCH_CHARS = 128 * 1024
LOG_BATCH_LINES = 1000
OUTBOX_LINES = 1000
SCROLLBACK = 64 * 1024
PTY_IDLE_TIMEOUT = 300.0
PTY_HANGUP_GRACE = 2.0
UNLIMITED_MEMORY = 1 << 60

_tasks: set[asyncio.Task[Any]] = set()


def log(message: str) -> None:
    text = "".join(f"dockyard-agent: {line}\n" for line in message.rstrip("\n").split("\n"))
    # Nobody may be reading stderr (or it is closed); that must not break the agent.
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stderr.write(text)
        sys.stderr.flush()


def spawn_task(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    # The loop keeps only weak references to tasks; a fire-and-forget task needs a strong one.
    task = asyncio.ensure_future(coro)
    _tasks.add(task)
    task.add_done_callback(_task_done)
    return task


def _task_done(task: asyncio.Task[Any]) -> None:
    _tasks.discard(task)
    exc = None if task.cancelled() else task.exception()
    if exc is not None:
        log("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))


def _loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # asyncio's default handler goes through `logging`; keep every line of ours under one prefix.
    text = str(context.get("message", "unexpected error in the event loop"))
    exc = context.get("exception")
    if isinstance(exc, BaseException):
        text += "\n" + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    log(text)


# --- connections -------------------------------------------------------------------------------------------


class Conn:
    """One connection to the control plane's socket, carrying frames (or raw bytes after a `dial`)."""

    __slots__ = ("closed", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        # Completes when the transport is gone, even while nobody is reading (e.g. stdin is blocked).
        self.closed: asyncio.Task[None] = spawn_task(_wait_closed(writer))

    async def recv(self) -> tuple[int, bytes] | None:
        """The next frame, or None once the peer is gone or broke the framing."""
        try:
            kind, length = _HEADER.unpack(await self.reader.readexactly(_HEADER.size))
            if length > MAX_FRAME:
                log(f"dropping a connection that sent a {length}-byte frame")
                self.close()
                return None
            payload = await self.reader.readexactly(length) if length else b""
        except (asyncio.IncompleteReadError, OSError):
            return None
        return kind, payload

    def closing(self) -> bool:
        return self.writer.is_closing()

    def send(self, kind: int, payload: bytes = b"") -> None:
        # Writing to a closed transport only makes asyncio log warnings; the data has nowhere to go.
        if not self.writer.is_closing():
            self.writer.write(_HEADER.pack(kind, len(payload)) + payload)

    def send_json(self, obj: dict[str, Any]) -> None:
        payload = encode_json(obj)
        if len(payload) > MAX_FRAME:
            log(f"not sending a {obj.get('type')} message of {len(payload)} bytes: over the frame limit")
            return
        self.send(JSON, payload)

    def buffered(self) -> int:
        return self.writer.transport.get_write_buffer_size()

    async def drain(self) -> None:
        if self.buffered() > HIGH_WATER:
            with contextlib.suppress(OSError):
                await self.writer.drain()

    def close(self) -> None:
        self.writer.close()

    async def finish(self, linger: float = LINGER) -> None:
        """Close after our last frame without losing it.

        Closing a unix socket with unread input resets the peer, which may then never read our last frame (an
        exit, an error): so half-close, and discard what the peer still sends until it closes too.
        """
        if self.writer.is_closing():
            return
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            if self.writer.can_write_eof():
                self.writer.write_eof()
            await asyncio.wait_for(self._discard(), linger)
        self.writer.close()

    async def _discard(self) -> None:
        while await self.reader.read(CHUNK):
            pass


async def _wait_closed(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def private_folder(prefix: str) -> str:
    """A new folder that only this user can enter, in $TMPDIR or /tmp: `tempfile.mkdtemp`'s promise without
    importing `tempfile` (and `shutil`, `random`, `weakref` behind it) at every agent's start."""
    base = os.environ.get("TMPDIR") or "/tmp"  # noqa: S108 - a fresh 0700 folder with an unguessable name
    for _ in range(100):
        path = os.path.join(base, prefix + os.urandom(6).hex())
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(errno.EEXIST, "no unused temporary folder name", base)


async def dial(path: str) -> Conn:
    reader, writer = await asyncio.open_unix_connection(path, limit=READ_LIMIT)
    return Conn(reader, writer)


# --- the network link: the same frames over a WebSocket (docs/AGENT_PROTOCOL.md, "Network link") ----------
#
# No library can be installed in a workspace, so this is a minimal RFC 6455 client: the upgrade, masked binary
# messages out, unmasked ones in, pings answered. The frames ride as bytes in binary messages; the text message
# `{"type":"eof"}` stands for a half-close of the side that sent it, as on the API's other byte streams.

LINK_PATH = "/api/v2/agents/link"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WS_EOF = b'{"type":"eof"}'
WS_CONTINUATION, WS_TEXT, WS_BINARY, WS_CLOSE, WS_PING, WS_PONG = 0, 1, 2, 8, 9, 10
WS_HEAD_MAX = 16 * 1024
# While only the peer may still send, how often to look whether our side closed the stream.
HANGUP_POLL = 0.5


class LinkRefused(Exception):
    """The control plane turned the connection away (a bad token, or a connection from the wrong place)."""


def ws_mask(data: bytes, mask: bytes) -> bytes:
    # One XOR of two big integers runs in C: a 256 KiB message costs microseconds, not a Python loop per byte.
    size = len(data)
    repeated = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(data, "little") ^ int.from_bytes(repeated, "little")).to_bytes(size, "little")


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    return header + mask + ws_mask(payload, mask)


def ssl_context(ca_bundle: str) -> Any:
    import ssl  # only an https:// control plane pays for OpenSSL

    # Verified always: the agent's token must never reach a server that is not the control plane.
    return ssl.create_default_context(cafile=ca_bundle or None)


async def ws_connect(
    url: str, token: str, ca_bundle: str = ""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The upgraded connection to `url`'s agent link; raises LinkRefused for 401/403, OSError otherwise."""
    # Imported here, as the other modules only the network link needs: every agent's start pays for what it
    # imports, times every workspace of a burst, on the link socket too.
    import base64
    import hashlib
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LinkRefused(f"{url!r} is not an http:// or https:// URL")
    secure = parts.scheme == "https"
    context = ssl_context(ca_bundle) if secure else None
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(
            parts.hostname,
            parts.port or (443 if secure else 80),
            ssl=context,
            server_hostname=parts.hostname if secure else None,
            limit=READ_LIMIT,
        ),
        DIAL_TIMEOUT,
    )
    try:
        key = base64.b64encode(os.urandom(16))
        writer.write(
            (
                f"GET {parts.path.rstrip('/')}{LINK_PATH} HTTP/1.1\r\n"
                f"Host: {parts.netloc.rpartition('@')[2]}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n"
                f"Authorization: Bearer {token}\r\n"
                f"User-Agent: dockyard-agent/{VERSION}\r\n\r\n"
            ).encode()
        )
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DIAL_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise ConnectionError("the control plane closed the connection during the handshake") from exc
        status_line, *lines = head.decode("latin-1").split("\r\n")
        fields = status_line.split()
        status = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else 0
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if status != 101:
            raise await _link_refusal(reader, status, headers)
        expected = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())  # noqa: S324
        if headers.get("sec-websocket-accept", "").encode() != expected:
            raise ConnectionError("the control plane answered the WebSocket handshake wrongly")
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def _link_refusal(reader: asyncio.StreamReader, status: int, headers: dict[str, str]) -> Exception:
    length = (
        int(headers.get("content-length", "0") or 0) if headers.get("content-length", "").isdigit() else 0
    )
    body = b""
    with contextlib.suppress(OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
        body = await asyncio.wait_for(reader.readexactly(min(length, WS_HEAD_MAX)), 2.0)
    error = decode_json(body) or {}
    message = error.get("message") or body.decode(errors="replace")[:200] or f"HTTP {status}"
    if error.get("detail"):
        message = f"{message} ({error['detail']})"
    if status in (401, 403):
        return LinkRefused(str(message))
    # A proxy's 502 while a replica restarts, a 404 from something that is not Dockyard: worth re-dialing.
    return ConnectionError(f"HTTP {status}: {message}")


def _hung_up(sock: socket.socket) -> bool:
    """Whether our end of the pair saw the agent close its side completely (not only half-close it)."""
    import select

    poller = select.poll()
    poller.register(sock, select.POLLHUP)
    return any(event & select.POLLHUP for _, event in poller.poll(0))


async def ws_dial(url: str, token: str, ca_bundle: str = "") -> Conn:
    """A Conn over the network link: the agent's code sees the same stream a unix socket gives it.

    A socket pair joins the Conn to the WebSocket, so flow control, half-close and closing behave as they do on
    the unix socket, and nothing else in the agent knows which transport it runs on.
    """
    reader, writer = await ws_connect(url, token, ca_bundle)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    try:
        local_reader, local_writer = await asyncio.open_unix_connection(sock=theirs, limit=READ_LIMIT)
    except BaseException:
        ours.close()
        theirs.close()
        writer.close()
        raise
    spawn_task(_ws_pump(reader, writer, ours))
    return Conn(local_reader, local_writer)


async def _ws_pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ours: socket.socket) -> None:
    loop = asyncio.get_running_loop()

    async def inbound() -> None:
        text = False
        while True:
            head = await reader.readexactly(2)
            opcode, size = head[0] & 0x0F, head[1] & 0x7F
            if size == 126:
                (size,) = struct.unpack("!H", await reader.readexactly(2))
            elif size == 127:
                (size,) = struct.unpack("!Q", await reader.readexactly(8))
            mask = await reader.readexactly(4) if head[1] & 0x80 else b""
            payload = await reader.readexactly(size) if size else b""
            if mask:
                payload = ws_mask(payload, mask)
            if opcode == WS_PING:
                writer.write(ws_frame(WS_PONG, payload))
            elif opcode == WS_CLOSE:
                return
            elif opcode in (WS_TEXT, WS_BINARY, WS_CONTINUATION):
                if opcode != WS_CONTINUATION:
                    text = opcode == WS_TEXT
                if not text:
                    await loop.sock_sendall(ours, payload)
                elif payload == WS_EOF:
                    ours.shutdown(socket.SHUT_WR)

    async def outbound() -> None:
        while True:
            data = await loop.sock_recv(ours, CHUNK)
            if not data:
                break
            writer.write(ws_frame(WS_BINARY, data))
            await writer.drain()
        if _hung_up(ours):
            return
        # Only half-closed (a finished exec lingers for the peer's close): pass the half-close on.
        writer.write(ws_frame(WS_TEXT, WS_EOF))
        while not _hung_up(ours):
            await asyncio.sleep(HANGUP_POLL)

    tasks = [spawn_task(inbound()), spawn_task(outbound())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        ours.close()
        with contextlib.suppress(OSError, RuntimeError):
            if not writer.is_closing():
                writer.write(ws_frame(WS_CLOSE, struct.pack("!H", 1000)))
            writer.close()


class Link:
    """Where the control plane is: its unix socket, or one or more URLs of its replicas (tried in turn)."""

    def __init__(self, socket_path: str = "", urls: list[str] | None = None, ca_bundle: str = "") -> None:
        self.socket_path = socket_path
        self.urls = [url.strip().rstrip("/") for url in urls or [] if url.strip()]
        self.ca_bundle = ca_bundle
        # Agents start at different replicas, so one replica does not hold them all.
        self.current = random.randrange(len(self.urls)) if self.urls else 0

    def describe(self) -> str:
        return self.urls[self.current] if self.urls else self.socket_path

    async def dial(self, token: str) -> Conn:
        """A connection to where the control connection is (streams must reach the replica that asked)."""
        if not self.urls:
            return await dial(self.socket_path)
        return await ws_dial(self.urls[self.current], token, self.ca_bundle)

    def next(self) -> None:
        """After a failure: the next replica gets the next attempt."""
        if self.urls:
            self.current = (self.current + 1) % len(self.urls)


class Pausable(abc.ABC):
    """A source of output that can stop reading while its consumer catches up."""

    paused = False

    @abc.abstractmethod
    def pause(self) -> None: ...

    @abc.abstractmethod
    def resume(self) -> None: ...


def forward(conn: Conn, kind: int, data: bytes, source: Pausable) -> None:
    conn.send(kind, data)
    if not source.paused and conn.buffered() > HIGH_WATER:
        source.pause()
        spawn_task(_resume_when_drained(conn, source))


async def _resume_when_drained(conn: Conn, source: Pausable) -> None:
    try:
        await conn.drain()
    finally:
        source.resume()


class Activity:
    """When output last flowed, and whether a reader is paused behind a slow peer (which is not silence)."""

    __slots__ = ("busy", "last")

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.busy = 0

    def touch(self) -> None:
        self.last = time.monotonic()


async def settle(waiters: list[asyncio.Future[Any]], activity: Activity, idle: float = EXIT_GRACE) -> None:
    """Wait for the waiters while output keeps flowing; give up once it has been silent for `idle`."""
    pending = {waiter for waiter in waiters if not waiter.done()}
    while pending:
        _, pending = await asyncio.wait(pending, timeout=idle)
        if pending and not activity.busy and time.monotonic() - activity.last >= idle:
            return


# --- processes ---------------------------------------------------------------------------------------------


def home_dir() -> str:
    candidates = [os.environ.get("HOME", "")]
    with contextlib.suppress(KeyError):
        candidates.append(pwd.getpwuid(os.getuid()).pw_dir)
    for candidate in candidates:
        if candidate and os.path.isdir(candidate):
            return candidate
    return "/"


def login_shell() -> str:
    shell = ""
    with contextlib.suppress(KeyError):
        shell = pwd.getpwuid(os.getuid()).pw_shell
    if not shell or os.path.basename(shell) in ("nologin", "false") or not os.access(shell, os.X_OK):
        shell = os.environ.get("SHELL", "")
    if not shell or not os.access(shell, os.X_OK):
        shell = "/bin/bash" if os.access("/bin/bash", os.X_OK) else "/bin/sh"
    return shell


def child_env(extra: Any = None, term: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # The agent token authenticates this agent; the user's programs and their logs have no use for it.
    env.pop("DOCKYARD_AGENT_TOKEN", None)
    env.pop("DOCKYARD_AGENT_TOKEN_FILE", None)
    if isinstance(extra, dict):
        for key, value in extra.items():
            if value is None:
                env.pop(str(key), None)
            else:
                env[str(key)] = str(value)
    if term:
        env["TERM"] = term
    return env


def killpg(pid: int, sig: int) -> None:
    # The child is a session (and group) leader, so its pid names the group even after it was reaped.
    if pid > 0:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)


# Every process an exec, terminal or script starts carries this variable with its own value, and so does
# everything they fork unless it clears its environment: the one mark that survives setsid() and a parent's
# exit (an orphan is re-parented to the container's init, out of any tree we could walk).
MARK_VARIABLE = "DOCKYARD_PROCESS_MARK"
# A fork bomb may fork between our reading /proc and our signal; passes repeat until one finds nothing left.
KILL_PASSES = 50
KILL_PASS_PAUSE = 0.01


def _process_row(proc: str, name: str) -> tuple[int, int, int, int] | None:
    """(pid, parent, process group, session) of a live process; None for zombies and vanished ones."""
    text = _read(os.path.join(proc, name, "stat"))
    if text is None:
        return None
    fields = text.rpartition(")")[2].split()
    if len(fields) < 4 or fields[0] in ("Z", "X", "x"):
        return None
    try:
        return int(name), int(fields[1]), int(fields[2]), int(fields[3])
    except ValueError:
        return None


def _carries_mark(proc: str, pid: int, mark: bytes) -> bool:
    try:
        with open(os.path.join(proc, str(pid), "environ"), "rb") as file:
            environ = file.read()
    except OSError:
        # Another user's process (sudo), or gone: not ours to find this way.
        return False
    return environ.startswith(mark) or b"\0" + mark in environ


def strays(leader: int, mark: str, *, known: set[int], proc: str = "/proc") -> set[int]:
    """Live processes that belong to the command `leader` started: its session, its process groups, their
    descendants, descendants of `known` (processes already signalled), and every process carrying `mark`."""
    try:
        names = [name for name in os.listdir(proc) if name.isdigit()]
    except OSError:
        return set()
    rows = [row for row in (_process_row(proc, name) for name in names) if row is not None]
    spared = {0, 1, os.getpid()}
    marked = f"{MARK_VARIABLE}={mark}\0".encode() if mark else b""
    found: set[int] = set()
    children: dict[int, list[int]] = {}
    for pid, parent, group, session in rows:
        children.setdefault(parent, []).append(pid)
        if pid in spared:
            continue
        if (
            session == leader
            or group == leader
            or pid in known
            or (marked and _carries_mark(proc, pid, marked))
        ):
            found.add(pid)
    pending = list(found)
    while pending:
        for pid in children.get(pending.pop(), ()):
            if pid not in found and pid not in spared:
                found.add(pid)
                pending.append(pid)
    return found


async def kill_all(leader: int, mark: str, proc: str = "/proc") -> int:
    """SIGKILL everything the command `leader` started, until a pass finds nothing left; returns how many
    processes were signalled. Not covered: processes of another user (a command run with sudo), and those
    that both left the session and cleared their environment before their parent died."""
    killpg(leader, signal.SIGKILL)
    signalled: set[int] = set()
    for _ in range(KILL_PASSES):
        found = strays(leader, mark, known=signalled, proc=proc)
        if not found:
            break
        for pid in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        signalled |= found
        await asyncio.sleep(KILL_PASS_PAUSE)
    return len(signalled)


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name[3:]
    except ValueError:
        return str(number)


def exit_status(returncode: int) -> tuple[int, str | None]:
    """Shell-style exit code (128 + N for signal N) and the signal's name without `SIG`."""
    if returncode < 0:
        return 128 - returncode, signal_name(-returncode)
    return returncode, None


def spawn_failure(exc: BaseException, argv0: str, cwd: str) -> tuple[int, str]:
    """Exit code and message for a program that could not be started, as a shell would put it."""
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
        if exc.filename == cwd and exc.filename != argv0:
            return 1, f"{cwd}: {reason}\n"
        if exc.errno == errno.ENOENT:
            if "/" in argv0 and os.path.exists(argv0):
                # The file is there, its interpreter (#! line) is not.
                return 126, f"{argv0}: bad interpreter: {reason}\n"
            return 127, f"{argv0}: command not found\n"
        return 126, f"{argv0}: {reason}\n"
    return 126, f"{argv0}: {exc}\n"


def _take_controlling_tty() -> None:
    # Runs in the child after setsid(): make the PTY (already on fd 0) the new session's terminal.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Child(asyncio.SubprocessProtocol, Pausable):
    """A spawned process in its own session: its exit, its output and its process group.

    asyncio's own `Process.wait()` also waits for the pipes to close (3.11+), which a background child can
    hold forever; this protocol reports the exit and the end of output separately.
    """

    def __init__(self, on_output: Callable[[int, bytes], None] | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.on_output = on_output
        self.transport: asyncio.SubprocessTransport | None = None
        self.pid = 0
        self.exited: asyncio.Future[int] = loop.create_future()
        self.outputs_done: asyncio.Future[None] = loop.create_future()
        self.activity = Activity()
        self.term: Pty | None = None
        # Marks this command's processes (see MARK_VARIABLE); spawn() puts it in their environment.
        self.mark = os.urandom(8).hex()
        self.sweep: asyncio.Task[int] | None = None
        self._open_outputs: set[int] = set()
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None

    # asyncio.SubprocessProtocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.SubprocessTransport)
        self.transport = transport
        self.pid = transport.get_pid()
        _live_children.add(self)
        self._open_outputs = {fd for fd in (1, 2) if transport.get_pipe_transport(fd) is not None}
        if not self._open_outputs:
            self.outputs_done.set_result(None)

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        self.activity.touch()
        if self.on_output is not None and isinstance(data, bytes):
            self.on_output(fd, data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 0:
            self._release_writer()
            return
        self._open_outputs.discard(fd)
        if not self._open_outputs and not self.outputs_done.done():
            self.outputs_done.set_result(None)

    def process_exited(self) -> None:
        returncode = self.transport.get_returncode() if self.transport is not None else None
        if not self.exited.done():
            self.exited.set_result(returncode if returncode is not None else 255)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._release_writer()

    def _release_writer(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._drained = None

    # output flow control (Pausable)

    def _output_pipes(self) -> list[asyncio.ReadTransport]:
        if self.transport is None:
            return []
        pipes = (self.transport.get_pipe_transport(fd) for fd in (1, 2))
        return [pipe for pipe in pipes if isinstance(pipe, asyncio.ReadTransport)]

    def pause(self) -> None:
        if self.paused:
            return
        self.paused = True
        if self.term is not None:
            self.term.pause()
            return
        self.activity.busy += 1
        for pipe in self._output_pipes():
            pipe.pause_reading()

    def resume(self) -> None:
        if not self.paused:
            return
        self.paused = False
        if self.term is not None:
            self.term.resume()
            return
        self.activity.busy -= 1
        self.activity.touch()
        for pipe in self._output_pipes():
            if not pipe.is_closing():
                pipe.resume_reading()

    # input

    @property
    def output_done(self) -> asyncio.Future[None]:
        return self.term.eof if self.term is not None else self.outputs_done

    async def write(self, data: bytes) -> None:
        if self.term is not None:
            await self.term.write(data)
            return
        pipe = self.transport.get_pipe_transport(0) if self.transport is not None else None
        if not isinstance(pipe, asyncio.WriteTransport) or pipe.is_closing():
            return
        pipe.write(data)
        if self._write_paused:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained

    async def write_eof(self) -> None:
        if self.term is not None:
            # With a terminal there is no EOF, only the character that means it in canonical mode.
            await self.term.write(b"\x04")
            return
        pipe = self.transport.get_pipe_transport(0) if self.transport is not None else None
        if isinstance(pipe, asyncio.WriteTransport) and not pipe.is_closing():
            pipe.close()

    def resize(self, width: int, height: int) -> None:
        if self.term is not None and self.term.resize(width, height):
            killpg(self.pid, signal.SIGWINCH)

    def signal(self, sig: int) -> None:
        killpg(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL the command and everything it started, wherever it went (see kill_all)."""
        killpg(self.pid, signal.SIGKILL)
        if self.pid > 0 and (self.sweep is None or self.sweep.done()):
            self.sweep = spawn_task(kill_all(self.pid, self.mark))

    def close(self) -> None:
        _live_children.discard(self)
        if self.term is not None:
            self.term.close()
        if self.transport is not None:
            self.transport.close()


# Every spawned process whose transport is still open, so that exiting closes them while the loop still runs.
_live_children: set[Child] = set()


async def spawn(
    child: Child,
    argv: list[str],
    *,
    cwd: str,
    env: dict[str, str],
    stdin: int = subprocess.PIPE,
    stdout: int = subprocess.PIPE,
    stderr: int = subprocess.PIPE,
    **popen: Any,
) -> Child:
    loop = asyncio.get_running_loop()
    await loop.subprocess_exec(
        lambda: child,
        *argv,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        cwd=cwd,
        env={**env, MARK_VARIABLE: child.mark},
        start_new_session=True,
        **popen,
    )
    return child


class Pty(Pausable):
    """The master side of a pseudo-terminal, read and written without ever blocking the loop."""

    def __init__(self, fd: int, on_data: Callable[[bytes], None], activity: Activity) -> None:
        self.fd = fd
        self.on_data = on_data
        self.activity = activity
        self._loop = asyncio.get_running_loop()
        self.eof: asyncio.Future[None] = self._loop.create_future()
        self._out = bytearray()
        self._drained: asyncio.Future[None] | None = None
        os.set_blocking(fd, False)
        self._loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, CHUNK)
        except BlockingIOError:
            return
        except OSError:
            # EIO: every process holding the terminal has closed it.
            data = b""
        if not data:
            self._loop.remove_reader(self.fd)
            if not self.eof.done():
                self.eof.set_result(None)
            return
        self.activity.touch()
        self.on_data(data)

    def pause(self) -> None:
        if not self.paused:
            self.paused = True
            self.activity.busy += 1
            if self.fd >= 0 and not self.eof.done():
                self._loop.remove_reader(self.fd)

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            self.activity.busy -= 1
            self.activity.touch()
            if self.fd >= 0 and not self.eof.done():
                self._loop.add_reader(self.fd, self._readable)

    async def write(self, data: bytes) -> None:
        if self.fd < 0:
            return
        if not self._out:
            try:
                written = os.write(self.fd, data)
            except BlockingIOError:
                written = 0
            except OSError:
                return
            if written == len(data):
                return
            data = data[written:]
            self._loop.add_writer(self.fd, self._writable)
        self._out += data
        if len(self._out) > HIGH_WATER:
            self._drained = self._loop.create_future()
            await self._drained

    def _writable(self) -> None:
        try:
            written = os.write(self.fd, self._out)
        except BlockingIOError:
            return
        except OSError:
            written = len(self._out)
        del self._out[:written]
        if not self._out:
            self._loop.remove_writer(self.fd)
        if len(self._out) <= HIGH_WATER:
            self._release_writer()

    def _release_writer(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._drained = None

    def resize(self, width: int, height: int) -> bool:
        if self.fd < 0 or not (0 < width < 65536 and 0 < height < 65536):
            return False
        with contextlib.suppress(OSError):
            fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
            return True
        return False

    def close(self) -> None:
        if self.fd < 0:
            return
        self._loop.remove_reader(self.fd)
        self._loop.remove_writer(self.fd)
        os.close(self.fd)
        self.fd = -1
        self._out.clear()
        self._release_writer()
        if not self.eof.done():
            self.eof.set_result(None)


async def spawn_pty(
    argv: list[str],
    *,
    cwd: str,
    env: dict[str, str],
    width: int,
    height: int,
    on_data: Callable[[bytes], None],
) -> Child:
    import pty  # only a terminal needs it

    master, slave = pty.openpty()
    try:
        with contextlib.suppress(OSError):
            fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
        child = Child()
        await spawn(
            child,
            argv,
            cwd=cwd,
            env=env,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            preexec_fn=_take_controlling_tty,
        )
    except BaseException:
        os.close(master)
        raise
    finally:
        # Only the child may hold the slave, so that reading the master ends (EIO) when the child is gone.
        os.close(slave)
    child.term = Pty(master, on_data, child.activity)
    return child


async def pump_input(conn: Conn, child: Child) -> None:
    """Apply what the client sends to the process until the connection ends."""
    while True:
        frame = await conn.recv()
        if frame is None:
            return
        kind, payload = frame
        if kind == STDIN:
            await child.write(payload)
        elif kind == EOF:
            await child.write_eof()
        elif kind == JSON:
            message = decode_json(payload) or {}
            action = message.get("type")
            if action == "resize":
                width, height = message.get("width"), message.get("height")
                if isinstance(width, int) and isinstance(height, int):
                    child.resize(width, height)
            elif action == "signal":
                number = getattr(
                    signal, "SIG" + str(message.get("signal", "")).upper().removeprefix("SIG"), None
                )
                if isinstance(number, signal.Signals):
                    child.signal(number)
            elif action == "kill":
                child.kill()


async def run_attached(conn: Conn, child: Child) -> None:
    """Serve a process to one connection: input in, exit frame out; a vanished client kills the group."""
    pump = spawn_task(pump_input(conn, child))
    counters = limit_counters()
    try:
        await asyncio.wait({pump, child.exited, conn.closed}, return_when=asyncio.FIRST_COMPLETED)
        if not child.exited.done():
            # The client went away or gave up: nothing the command forked may outlive it.
            child.kill()
            await child.exited
            return
        await settle([child.output_done], child.activity)
        code, name = exit_status(child.exited.result())
        exited: dict[str, Any] = {"type": "exit", "exit_code": code, "signal": name}
        # Counted for the whole workspace: another command may have hit the limit meanwhile.
        hit = limits_hit(counters, limit_counters())
        if hit:
            exited["limits_hit"] = hit
        conn.send_json(exited)
    finally:
        pump.cancel()
        # The pump must be off the reader before anyone else (Conn.finish) reads it.
        await asyncio.wait({pump})


# --- logs --------------------------------------------------------------------------------------------------


def _char_boundary(raw: bytes | bytearray, cut: int) -> int:
    # Step back over UTF-8 continuation bytes so a split never cuts a character in two.
    for candidate in range(cut, max(cut - 3, 1) - 1, -1):
        if raw[candidate] & 0xC0 != 0x80:
            return candidate
    return cut


class LineSplitter:
    """Turns a byte stream into log lines: no trailing newline, none longer than LOG_LINE_MAX bytes."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit = emit
        self.buffer = bytearray()

    def feed(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            self._line(buffer[start:end])
            start = end + 1
        del buffer[:start]
        while len(buffer) > LOG_LINE_MAX:
            cut = _char_boundary(buffer, LOG_LINE_MAX)
            self.emit(buffer[:cut].decode("utf-8", "replace"))
            del buffer[:cut]

    def close(self) -> None:
        if self.buffer:
            self._line(self.buffer)
            self.buffer = bytearray()

    def _line(self, raw: bytes | bytearray) -> None:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        while len(raw) > LOG_LINE_MAX:
            cut = _char_boundary(raw, LOG_LINE_MAX)
            self.emit(raw[:cut].decode("utf-8", "replace"))
            raw = raw[cut:]
        self.emit(raw.decode("utf-8", "replace"))


class LogBatcher:
    """Collects one source's lines into `log` messages, at most one per LOG_INTERVAL unless it grows large."""

    def __init__(self, send: Callable[[dict[str, Any]], None], source: str) -> None:
        self.send = send
        self.source = source
        self.lines: list[str] = []
        self.chars = 0
        self.timer: asyncio.TimerHandle | None = None

    def add(self, line: str) -> None:
        self.lines.append(line)
        self.chars += len(line)
        if self.chars >= LOG_BATCH_CHARS or len(self.lines) >= LOG_BATCH_LINES:
            self.flush()
        elif self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(LOG_INTERVAL, self.flush)

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.lines:
            lines, self.lines, self.chars = self.lines, [], 0
            self.send({"type": "log", "source": self.source, "lines": lines})


# --- stats -------------------------------------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            return file.read()
    except OSError:
        return None


def _read_int(path: str) -> int | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def _stat_field(text: str | None, key: str) -> int | None:
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            with contextlib.suppress(ValueError):
                return int(value)
    return None


def cpu_usage_ns(cgroup: str = "/sys/fs/cgroup", proc: str = "/proc") -> int | None:
    """CPU time used by the workspace so far, in nanoseconds, or None when nothing tells."""
    usage = _stat_field(_read(os.path.join(cgroup, "cpu.stat")), "usage_usec")
    if usage is not None:
        return usage * 1000
    for folder in ("cpuacct", "cpu,cpuacct", "cpuacct,cpu"):
        usage = _read_int(os.path.join(cgroup, folder, "cpuacct.usage"))
        if usage is not None:
            return usage
    return _processes_cpu_ns(proc)


def _processes_cpu_ns(proc: str) -> int | None:
    # Without a cgroup file, add up the processes we can see (our PID namespace in a container). Exited
    # processes drop out of the sum, which CpuMeter clamps rather than reporting negative use.
    try:
        names = os.listdir(proc)
    except OSError:
        return None
    ticks = 0
    seen = False
    for name in names:
        if not name.isdigit():
            continue
        text = _read(os.path.join(proc, name, "stat"))
        if text is None:
            continue
        fields = text.rpartition(")")[2].split()
        if len(fields) > 12:
            with contextlib.suppress(ValueError):
                ticks += int(fields[11]) + int(fields[12])
                seen = True
    if not seen:
        return None
    return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Cores in use, averaged since the previous sample."""

    def __init__(self, cgroup: str = "/sys/fs/cgroup", proc: str = "/proc") -> None:
        self.cgroup = cgroup
        self.proc = proc
        self.last: tuple[int, float] | None = None

    def sample(self) -> float:
        usage = cpu_usage_ns(self.cgroup, self.proc)
        now = time.monotonic()
        if usage is None:
            return 0.0
        last, self.last = self.last, (usage, now)
        if last is None or now <= last[1]:
            return 0.0
        return round(max(0, usage - last[0]) / 1e9 / (now - last[1]), 3)


def memory(cgroup: str = "/sys/fs/cgroup") -> tuple[int, int | None]:
    """Memory in use without reclaimable page cache, and the limit (None when there is none)."""
    current = _read_int(os.path.join(cgroup, "memory.current"))
    if current is not None:
        inactive = _stat_field(_read(os.path.join(cgroup, "memory.stat")), "inactive_file") or 0
        limit = _read_int(os.path.join(cgroup, "memory.max"))
    else:
        folder = os.path.join(cgroup, "memory")
        current = _read_int(os.path.join(folder, "memory.usage_in_bytes"))
        if current is None:
            return 0, None
        inactive = _stat_field(_read(os.path.join(folder, "memory.stat")), "total_inactive_file") or 0
        limit = _read_int(os.path.join(folder, "memory.limit_in_bytes"))
    if limit is not None and (limit <= 0 or limit >= UNLIMITED_MEMORY):
        limit = None
    return max(0, current - inactive), limit


def _controller_file(cgroup: str, controller: str, name: str) -> str:
    # cgroup v2 has one folder for every controller; v1 one folder per controller.
    unified = os.path.join(cgroup, name)
    return unified if os.path.exists(unified) else os.path.join(cgroup, controller, name)


def pids(cgroup: str = "/sys/fs/cgroup") -> dict[str, int | None]:
    """Processes (tasks) in the workspace, its limit, and how many forks the limit refused so far."""
    limit = _read_int(_controller_file(cgroup, "pids", "pids.max"))  # "max" (no limit) reads as None
    return {
        "pids_current": _read_int(_controller_file(cgroup, "pids", "pids.current")),
        "pids_limit": limit,
        "pids_limit_hits": _stat_field(_read(_controller_file(cgroup, "pids", "pids.events")), "max"),
    }


def oom_kills(cgroup: str = "/sys/fs/cgroup") -> int | None:
    """Processes the kernel killed so far for the workspace's memory limit."""
    text = _read(os.path.join(cgroup, "memory.events"))
    if text is None:
        text = _read(os.path.join(cgroup, "memory", "memory.oom_control"))
    return _stat_field(text, "oom_kill")


def limit_counters(cgroup: str = "/sys/fs/cgroup") -> tuple[int | None, int | None]:
    return oom_kills(cgroup), pids(cgroup)["pids_limit_hits"]


def limits_hit(before: tuple[int | None, int | None], after: tuple[int | None, int | None]) -> list[str]:
    """Which workspace limits were hit between two readings of limit_counters()."""
    hit = []
    for index, name in enumerate(("memory", "pids")):
        old, new = before[index], after[index]
        if old is not None and new is not None and new > old:
            hit.append(name)
    return hit


def disk_limit() -> int | None:
    """The home volume's size limit, when the runtime made it a file system of its own of that size."""
    value = os.environ.get("DOCKYARD_HOME_DISK_LIMIT", "")
    return int(value) if value.isdigit() else None


def disk(path: str) -> tuple[int, int]:
    """Bytes used and total on the file system holding `path`."""
    try:
        vfs = os.statvfs(path)
    except OSError:
        return 0, 0
    return (vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize, vfs.f_blocks * vfs.f_frsize


def _address(hex_address: str, family: str) -> str:
    raw = bytes.fromhex(hex_address)
    if family == "ipv4":
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    # The kernel prints an IPv6 address as four host-order (little-endian) 32-bit words.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def listening_ports(proc: str = "/proc") -> list[dict[str, Any]]:
    found: set[tuple[int, str, str]] = set()
    for name, family in (("tcp", "ipv4"), ("tcp6", "ipv6")):
        text = _read(os.path.join(proc, "net", name))
        for line in (text or "").splitlines()[1:]:
            fields = line.split()
            if len(fields) < 4 or fields[3] != "0A":
                continue
            hex_address, _, hex_port = fields[1].partition(":")
            try:
                found.add((int(hex_port, 16), family, _address(hex_address, family)))
            except ValueError:
                log(f"unreadable line in {name}: {line.strip()}")
    return [{"port": port, "address": address, "family": family} for port, family, address in sorted(found)]


# --- reconnecting terminals --------------------------------------------------------------------------------


class PtySession:
    """A terminal that outlives its connections: one attached at a time, the last 64 KiB replayed on attach."""

    def __init__(self, agent: Agent, key: str) -> None:
        self.agent = agent
        self.key = key
        self.child: Child | None = None
        self.conn: Conn | None = None
        self.scrollback = bytearray()
        self.expiry: asyncio.TimerHandle | None = None

    async def start(self, argv: list[str], *, cwd: str, env: dict[str, str], width: int, height: int) -> None:
        self.child = await spawn_pty(argv, cwd=cwd, env=env, width=width, height=height, on_data=self._output)
        self.agent.children.add(self.child)
        spawn_task(self._watch(self.child))

    def _output(self, data: bytes) -> None:
        scrollback = self.scrollback
        scrollback += data
        if len(scrollback) > SCROLLBACK:
            del scrollback[: len(scrollback) - SCROLLBACK]
        if self.conn is not None and self.child is not None:
            forward(self.conn, STDOUT, data, self.child)

    async def attach(self, conn: Conn, width: Any, height: Any) -> None:
        child = self.child
        assert child is not None
        previous, self.conn = self.conn, conn
        if previous is not None:
            # One viewer at a time: the newest takes over (a reconnect after a network change, typically).
            previous.close()
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        if isinstance(width, int) and isinstance(height, int):
            child.resize(width, height)
        if self.scrollback:
            conn.send(STDOUT, bytes(self.scrollback))
        try:
            await pump_input(conn, child)
        finally:
            if self.conn is conn:
                self.conn = None
                # Nobody to slow down for: keep the terminal flowing into the scrollback.
                child.resume()
                if not child.exited.done():
                    self.expiry = asyncio.get_running_loop().call_later(PTY_IDLE_TIMEOUT, self._expire)

    def _expire(self) -> None:
        self.expiry = None
        child = self.child
        if child is not None and not child.exited.done():
            log(f"terminal {self.key}: nobody attached for {PTY_IDLE_TIMEOUT:.0f} s, hanging up")
            child.signal(signal.SIGHUP)
            asyncio.get_running_loop().call_later(PTY_HANGUP_GRACE, self._kill_if_alive, child)

    @staticmethod
    def _kill_if_alive(child: Child) -> None:
        # Even when the shell obeyed the hangup: what it left running belongs to a terminal that is gone.
        child.kill()

    async def _watch(self, child: Child) -> None:
        try:
            await child.exited
            await settle([child.output_done], child.activity)
        finally:
            if self.agent.ptys.get(self.key) is self:
                del self.agent.ptys[self.key]
            self.agent.children.discard(child)
            if self.expiry is not None:
                self.expiry.cancel()
                self.expiry = None
            conn, self.conn = self.conn, None
            if conn is not None:
                code, name = exit_status(child.exited.result()) if child.exited.done() else (255, None)
                conn.send_json({"type": "exit", "exit_code": code, "signal": name})
                # Half-close and let the attach loop read on until the client hangs up (see Conn.finish).
                with contextlib.suppress(OSError):
                    if conn.writer.can_write_eof():
                        conn.writer.write_eof()
                asyncio.get_running_loop().call_later(LINGER, conn.close)
            child.close()


# --- the agent ---------------------------------------------------------------------------------------------

Handler = Callable[[Conn, dict[str, Any]], Awaitable[None]]


def _number(value: Any, default: float) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def _size(value: Any, default: int) -> int:
    """A terminal dimension: what the kernel's winsize (unsigned short) can hold."""
    return min(max(int(_number(value, default)), 1), 65535)


def _error(message: str, code: str = "EINVAL") -> dict[str, Any]:
    return {"type": "error", "error": message, "code": code}


def file_error(exc: OSError, path: str) -> dict[str, Any]:
    code = errno.errorcode.get(exc.errno or 0, "EIO")
    reason = exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc))
    return _error(f"{reason}: {path}", code)


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    return "other"


def _oserror(number: int, path: str) -> OSError:
    return OSError(number, os.strerror(number), path)


class Agent:
    def __init__(self, socket_path: str, token: str, *, link: Link | None = None) -> None:
        self.link = link or Link(socket_path)
        self.token = token
        self.home = home_dir()
        self.control: Conn | None = None
        self.welcome: dict[str, Any] = {}
        self.state: str | None = None
        self.state_exit_code: int | None = None
        self.state_error: str | None = None
        self.outbox: deque[dict[str, Any]] = deque()
        self.outbox_lines = 0
        self.batchers: dict[str, LogBatcher] = {}
        self.children: set[Child] = set()
        self.scripts: set[Child] = set()
        self.ptys: dict[str, PtySession] = {}
        self.started = False
        self.startup: asyncio.Task[None] | None = None
        self.shutting_down = False
        # Git credential requests waiting for the control plane's answer, by request id.
        self.credential_requests: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.request_ids = itertools.count(1)
        # Connections to the git proxy port waiting for their stream to the control plane, by connection id.
        self.git_proxy_waiting: dict[str, asyncio.Future[Conn]] = {}
        self.git_proxy: asyncio.AbstractServer | None = None
        umask = os.umask(0o022)
        os.umask(umask)
        self.umask = umask
        self.handlers: dict[str, Handler] = {
            "exec": self._exec,
            "pty": self._pty,
            "dial": self._dial,
            "file_read": self._file_read,
            "file_write": self._file_write,
            "file_delete": self._file_delete,
            "file_list": self._file_list,
            "file_stat": self._file_stat,
            "git_proxy": self._git_proxy_stream,
        }

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_loop_error)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        task_server = await self._serve_task_reports()
        control = spawn_task(self._control_loop())
        await stop.wait()
        await self._shutdown()
        if task_server is not None:
            task_server.close()
            # The workspace's /tmp outlives the agent (a stopped container keeps it, an agent on a host shares
            # it), and every start makes a new folder.
            with contextlib.suppress(OSError):
                os.unlink(os.environ[TASK_SOCKET_ENV])
                os.rmdir(os.path.dirname(os.environ[TASK_SOCKET_ENV]))
        control.cancel()
        if self.control is not None:
            self.control.close()
        for child in list(_live_children):
            child.close()
        # Let the transports' close callbacks run before asyncio.run() closes the loop.
        await asyncio.sleep(0)
        return 0

    # task reports from inside the workspace

    async def _serve_task_reports(self) -> asyncio.AbstractServer | None:
        """Listen where `dockyard-agent report` finds us; the folder is the workspace user's alone."""
        try:
            folder = private_folder("dockyard-agent-")
            path = os.path.join(folder, "task.sock")
            server = await asyncio.start_unix_server(self._task_client, path)
        except OSError as exc:
            log(f"task reports are unavailable: cannot listen in a temporary folder: {exc}")
            return None
        # Children inherit these: every exec, terminal and script can report, and finds the command.
        os.environ[TASK_SOCKET_ENV] = path
        tools = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bin")
        if os.path.isdir(tools):
            os.environ["PATH"] = tools + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin")
            os.environ.update(git_helper_env(os.path.join(tools, "dockyard-agent")))
        return server

    async def _task_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), TASK_SOCKET_TIMEOUT)
            message = decode_json(line.strip()) or {}
            if message.get("kind") == "git-credential":
                answer = await self._git_credential(message)
                writer.write(encode_json(answer) + b"\n")
                await writer.drain()
                return
            report = check_task_report(message)
            if isinstance(report, str):
                writer.write(encode_json({"ok": False, "error": report}) + b"\n")
            else:
                self.send({"type": "task", **report})
                writer.write(encode_json({"ok": True, "connected": self.control is not None}) + b"\n")
            await writer.drain()
        except (OSError, asyncio.TimeoutError):  # noqa: UP041 - distinct from TimeoutError before Python 3.11
            pass
        finally:
            writer.close()

    async def _git_credential(self, message: dict[str, Any]) -> dict[str, Any]:
        """Ask the control plane for a git credential, for git's credential helper; it is only ever in memory."""
        protocol, host = message.get("protocol"), message.get("host")
        if not isinstance(protocol, str) or not isinstance(host, str) or not host:
            return {"ok": False, "error": "git did not name a protocol and host"}
        # Right after a (re)start the control connection may still be on its way.
        for _ in range(50):
            if self.control is not None and not self.control.closing():
                break
            await asyncio.sleep(0.1)
        control = self.control
        if control is None or control.closing():
            return {"ok": False, "error": "the control plane is not connected; try again"}
        request_id = str(next(self.request_ids))
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.credential_requests[request_id] = future
        try:
            control.send_json(
                {"type": "git_credential", "id": request_id, "protocol": protocol, "host": host}
            )
            answer = await asyncio.wait_for(future, CREDENTIAL_TIMEOUT)
        except asyncio.TimeoutError:  # noqa: UP041 - distinct from TimeoutError before Python 3.11
            return {"ok": False, "error": "the control plane did not answer"}
        finally:
            self.credential_requests.pop(request_id, None)
        if isinstance(answer.get("error"), str):
            return {"ok": False, "error": answer["error"]}
        return {"ok": True, "username": answer.get("username", ""), "password": answer.get("password", "")}

    # the git proxy: git's requests for the repository, relayed to the control plane, which holds the credential

    async def _start_git_proxy(self, repo: str) -> str | None:
        """Listen on loopback and point git at it for the repository (`url.<proxy>.insteadOf`), so every git
        the agent's children run reaches the repository through the control plane. This only routes: the
        limit is enforced there, and git run without this setting finds no credential at all."""
        if self.git_proxy is None:
            try:
                self.git_proxy = await asyncio.start_server(self._git_proxy_client, "127.0.0.1", 0)
            except OSError as exc:
                return f"cannot start the git proxy on 127.0.0.1: {exc}"
            port = self.git_proxy.sockets[0].getsockname()[1]
            os.environ.update(git_proxy_env(f"http://127.0.0.1:{port}/", repo))
        return None

    async def _git_proxy_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # While the control connection is re-dialing, git waits a little rather than failing at once.
        for _ in range(50):
            if self.control is not None and not self.control.closing():
                break
            await asyncio.sleep(0.1)
        control = self.control
        if control is None or control.closing():
            writer.close()
            return
        connection = str(next(self.request_ids))
        future: asyncio.Future[Conn] = asyncio.get_running_loop().create_future()
        self.git_proxy_waiting[connection] = future
        try:
            control.send_json({"type": "git_proxy", "id": connection})
            conn = await asyncio.wait_for(future, DIAL_TIMEOUT)
        except asyncio.TimeoutError:  # noqa: UP041 - distinct from TimeoutError before Python 3.11
            writer.close()
            return
        finally:
            self.git_proxy_waiting.pop(connection, None)
        try:
            await _pipe(conn, reader, writer)
        finally:
            writer.close()
            conn.close()

    async def _git_proxy_stream(self, conn: Conn, message: dict[str, Any]) -> None:
        """The control plane's stream for one git proxy connection: raw bytes both ways once `ok` is sent."""
        waiting = self.git_proxy_waiting.get(str(message.get("connection")))
        if waiting is None or waiting.done():
            conn.send_json(_error("no git connection is waiting for this stream"))
            return
        conn.send_json({"type": "ok"})
        waiting.set_result(conn)
        # The connection's own task relays it; this stream's handler lasts as long as the connection.
        await asyncio.shield(conn.closed)

    # messages to the control plane

    def send(self, message: dict[str, Any]) -> None:
        control = self.control
        if control is not None and not control.closing():
            control.send_json(message)
        elif message["type"] in ("log", "lifecycle", "task"):
            self._buffer(message)

    def _buffer(self, message: dict[str, Any]) -> None:
        if message["type"] == "task":
            # Only the newest task state matters once the control plane is back.
            for queued in [m for m in self.outbox if m["type"] == "task"]:
                self.outbox.remove(queued)
        self.outbox.append(message)
        if message["type"] != "log":
            return
        self.outbox_lines += len(message["lines"])
        # Keep the newest lines; lifecycle messages are few and always kept.
        while self.outbox_lines > OUTBOX_LINES:
            index, oldest = next((i, m) for i, m in enumerate(self.outbox) if m["type"] == "log")
            drop = min(self.outbox_lines - OUTBOX_LINES, len(oldest["lines"]))
            del oldest["lines"][:drop]
            self.outbox_lines -= drop
            if not oldest["lines"]:
                del self.outbox[index]

    def batcher(self, source: str) -> LogBatcher:
        batcher = self.batchers.get(source)
        if batcher is None:
            batcher = self.batchers[source] = LogBatcher(self.send, source)
        return batcher

    def warn(self, message: str) -> None:
        """Log to stderr and, as the `agent` source, to the control plane."""
        log(message)
        batcher = self.batcher("agent")
        for line in message.rstrip("\n").split("\n"):
            batcher.add(line[:LOG_LINE_MAX])

    def set_state(self, state: str, exit_code: int | None = None, *, error: str | None = None) -> None:
        # A state change goes after the lines that led to it.
        for batcher in self.batchers.values():
            batcher.flush()
        self.state, self.state_exit_code, self.state_error = state, exit_code, error
        self.send(self._lifecycle_message())

    def _lifecycle_message(self) -> dict[str, Any]:
        message = {"type": "lifecycle", "state": self.state, "exit_code": self.state_exit_code}
        if self.state_error is not None:
            message["error"] = self.state_error
        return message

    # the control connection

    async def _control_loop(self) -> None:
        delay = FIRST_BACKOFF_MIN
        last_problem = ("", 0.0)
        welcomed = False
        fast_until = time.monotonic() + FIRST_DIAL_FAST
        while True:
            try:
                outcome, problem = await self._control_session()
            except Exception:  # noqa: BLE001 - the outermost loop: a bug in one session must not end re-dialing
                outcome, problem = "lost", "control connection failed:\n" + traceback.format_exc()
            if outcome == "welcomed":
                welcomed = True
                delay = BACKOFF_MIN
            # This replica failed or lost us; another one (when there are several) gets the next attempt, so an
            # agent whose replica died goes straight to a live one.
            self.link.next()
            if problem and (problem != last_problem[0] or time.monotonic() - last_problem[1] > 60):
                log(problem)
                last_problem = (problem, time.monotonic())
            if outcome == "rejected":
                # A bad token stays bad until someone fixes it; no point in hammering the control plane.
                await asyncio.sleep(random.uniform(5.0, 10.0))
                continue
            awaited = not welcomed and time.monotonic() < fast_until
            if awaited and outcome == "unreachable" and not self.link.urls:
                await asyncio.sleep(FIRST_DIAL_POLL)
                continue
            if not awaited:
                # Welcomed once, or not within FIRST_DIAL_FAST (the control plane is down, not about to take us).
                delay = max(delay, BACKOFF_MIN)
            await asyncio.sleep(random.uniform(0, delay))
            delay = min(delay * 2, BACKOFF_MAX)

    async def _control_session(self) -> tuple[str, str]:
        """One control connection: hello, then serve it until it ends. Returns the outcome and what to log."""
        try:
            conn = await self.link.dial(self.token)
        except LinkRefused as exc:
            return "rejected", f"the control plane at {self.link.describe()} refused this agent: {exc}"
        except (OSError, asyncio.TimeoutError) as exc:  # noqa: UP041 - distinct from TimeoutError before 3.11
            return "unreachable", f"cannot reach the control plane at {self.link.describe()}: {exc}"
        try:
            conn.send_json(self._hello())
            try:
                frame = await asyncio.wait_for(conn.recv(), HELLO_TIMEOUT)
            except asyncio.TimeoutError:  # noqa: UP041 - distinct from TimeoutError before Python 3.11
                return "lost", f"no welcome within {HELLO_TIMEOUT:.0f} s"
            message = decode_json(frame[1]) if frame is not None and frame[0] == JSON else None
            if message is None:
                return "lost", "the control plane closed the connection before a welcome"
            if message.get("type") == "reject":
                return "rejected", f"the control plane rejected this agent: {message.get('error')}"
            if message.get("type") != "welcome":
                return "lost", f"expected a welcome, got {message.get('type')!r}"
            self._welcomed(conn, message)
            return "welcomed", await self._serve_control(conn)
        finally:
            if self.control is conn:
                self.control = None
            conn.close()

    def _hello(self) -> dict[str, Any]:
        return {
            "type": "hello",
            "token": self.token,
            "version": VERSION,
            "protocol": PROTOCOL,
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "os": sys.platform,
            "arch": os.uname().machine,
            "python": "{}.{}.{}".format(*sys.version_info[:3]),
        }

    def _welcomed(self, conn: Conn, welcome: dict[str, Any]) -> None:
        self.welcome = welcome
        self.control = conn
        # The server may have restarted and forgotten us: tell it where we are before the backlog.
        if self.state is not None and not any(m["type"] == "lifecycle" for m in self.outbox):
            conn.send_json(self._lifecycle_message())
        while self.outbox:
            conn.send_json(self.outbox.popleft())
        self.outbox_lines = 0
        if not self.started and not self.shutting_down:
            self.started = True
            self.startup = spawn_task(self._startup(welcome))
            spawn_task(self._stats_loop())

    async def _serve_control(self, conn: Conn) -> str:
        heartbeat = _number(self.welcome.get("heartbeat"), 15.0)
        silence = 3 * heartbeat if heartbeat > 0 else None
        while True:
            try:
                frame = await asyncio.wait_for(conn.recv(), silence)
            except asyncio.TimeoutError:  # noqa: UP041 - distinct from TimeoutError before Python 3.11
                return f"nothing from the control plane for {silence:.1f} s; re-dialing"
            if frame is None:
                return "the control connection closed; re-dialing"
            if frame[0] != JSON:
                continue
            message = decode_json(frame[1]) or {}
            kind = message.get("type")
            if kind == "ping":
                conn.send_json({"type": "pong"})
            elif kind == "open":
                stream = message.get("stream")
                if isinstance(stream, str):
                    spawn_task(self._stream(stream, message))
            elif kind == "git_credential":
                waiting = self.credential_requests.get(str(message.get("id")))
                if waiting is not None and not waiting.done():
                    waiting.set_result(message)
            elif kind == "claim":
                # Handled before the next frame is read, so every stream the control plane opens after the
                # claim already sees the new owner's environment.
                self._claimed(message)

    def _claimed(self, message: dict[str, Any]) -> None:
        """A warm pool member was claimed: take the owner's environment for what starts from now on, then
        clone their repository (with their credentials). Nothing restarts; open sessions go on."""
        env = message.get("env")
        if isinstance(env, dict):
            for key, value in env.items():
                if isinstance(key, str) and key and "=" not in key and isinstance(value, str):
                    os.environ[key] = value
        git = message.get("git")
        if isinstance(git, dict):
            spawn_task(self._claim_clone(git, _number(message.get("startup_timeout"), 0)))

    async def _claim_clone(self, git: dict[str, Any], timeout: float) -> None:
        if self.startup is not None:
            await asyncio.shield(self.startup)
        self.set_state("starting")
        if isinstance(git.get("error"), str):
            self.set_state("start_error", None, error=git["error"])
            return
        error = await self._clone(git, timeout)
        if error is not None:
            self.set_state("start_error", error[0], error=error[1])
        else:
            self.set_state("ready", 0)

    # lifecycle

    async def _startup(self, welcome: dict[str, Any]) -> None:
        script = welcome.get("startup_script")
        self.set_state("starting")
        git = welcome.get("git")
        if isinstance(git, dict) and isinstance(git.get("error"), str):
            self.set_state("start_error", None, error=git["error"])
            return
        if isinstance(git, dict) and git.get("repo") and git.get("proxy"):
            problem = await self._start_git_proxy(str(git["repo"]))
            if problem is not None:
                self.set_state("start_error", None, error=problem)
                return
        if isinstance(git, dict) and git.get("repo"):
            error = await self._clone(git, _number(welcome.get("startup_timeout"), 0))
            if self.shutting_down:
                return
            if error is not None:
                self.set_state("start_error", error[0], error=error[1])
                return
        if not isinstance(script, str) or not script.strip():
            self.set_state("ready")
            self._start_apps(welcome)
            return
        code = await self._run_script("startup_script", script, _number(welcome.get("startup_timeout"), 0))
        if self.shutting_down:
            return
        if code is None:
            self.set_state("start_timeout")
        elif code == 0:
            self.set_state("ready", 0)
        else:
            self.set_state("start_error", code)
        self._start_apps(welcome)

    def _start_apps(self, welcome: dict[str, Any]) -> None:
        """Each app's `command` runs as a script of its own (its output logged as `app:<slug>`) for the life
        of the workspace; shutdown kills it with the other scripts."""
        apps = welcome.get("apps")
        for app in apps if isinstance(apps, list) else []:
            if not isinstance(app, dict):
                continue
            slug, command = app.get("slug"), app.get("command")
            if isinstance(slug, str) and isinstance(command, str) and command.strip():
                spawn_task(self._run_script("app:" + slug[:28], command, 0))

    async def _clone(self, git: dict[str, Any], timeout: float) -> tuple[int | None, str] | None:
        """Clone the workspace's repository and check out its task branch; None, or (exit code, why not)."""
        output: list[str] = []
        env = {
            "DOCKYARD_GIT_REPO": str(git.get("repo", "")),
            "DOCKYARD_GIT_BRANCH": str(git.get("branch", "")),
            "DOCKYARD_GIT_PATH": str(git.get("path") or "project"),
            # Without a terminal git would wait for a password forever; the helper is the only way in.
            "GIT_TERMINAL_PROMPT": "0",
        }
        mirror, held = await self._git_mirror(git, os.path.join(self.home, env["DOCKYARD_GIT_PATH"]), timeout)
        if mirror:
            env["DOCKYARD_GIT_MIRROR"] = mirror
        try:
            code = await self._run_script("git", CLONE_SCRIPT, timeout, env=env, tee=output.append)
        finally:
            if held is not None:
                os.close(held)
        if code == 0:
            return None
        if code is None:
            return None, "cloning the repository timed out"
        lines = [line for line in output if line.strip() and not line.startswith("+ ")]
        return code, clone_error(lines, str(git.get("repo", "")))

    async def _git_mirror(self, git: dict[str, Any], path: str, timeout: float) -> tuple[str, int | None]:
        """The server's mirror of the repository to clone from, once the fetch this start asked for has worked,
        and the descriptor holding its clone lock (for the clone's length: the server rolls the mirror's packs
        up only while nobody holds it); "" to clone over the network (no mirror, a failed or late fetch, a
        repository cloned before)."""
        folder, after = git.get("mirror"), _number(git.get("mirror_after"), 0)
        if (
            not isinstance(folder, str)
            or not folder
            or not after
            or os.path.exists(os.path.join(path, ".git"))
        ):
            return "", None
        wait = min(GIT_MIRROR_WAIT, timeout) if timeout > 0 else GIT_MIRROR_WAIT
        deadline = time.monotonic() + wait
        while os.path.isdir(folder):
            try:
                with open(os.path.join(folder, "state.json"), "rb") as file:
                    state = decode_json(file.read()) or {}
            except OSError:
                state = {}
            if _number(state.get("began"), 0) >= after:
                if state.get("ok") is not True:
                    self.warn(
                        f"the server could not fetch its mirror of the repository: {state.get('error')}"
                    )
                    return "", None
                held = await self._clone_lock(folder, deadline)
                if held is False:
                    self.warn("the server's mirror of the repository was busy (its packs being rolled up)")
                    return "", None
                return os.path.join(folder, "repo.git"), held
            if time.monotonic() >= deadline:
                self.warn(f"the server's mirror of the repository was not fetched within {wait:.0f} s")
                return "", None
            await asyncio.sleep(0.05)
        return "", None

    @staticmethod
    async def _clone_lock(folder: str, deadline: float) -> int | Literal[False] | None:
        """A read lock on the mirror's `clones.lock` (None when the server made none); False when the server's
        roll-up held it for GIT_MIRROR_LOCK_WAIT or until `deadline`."""
        try:
            held = os.open(os.path.join(folder, "clones.lock"), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        deadline = min(deadline, time.monotonic() + GIT_MIRROR_LOCK_WAIT)
        while True:
            try:
                fcntl.lockf(held, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return held
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    # A filesystem without locks: the clone's fallback covers a roll-up beside it.
                    os.close(held)
                    return None
            if time.monotonic() >= deadline:
                os.close(held)
                return False
            await asyncio.sleep(0.05)

    async def _run_script(
        self,
        source: str,
        script: str,
        timeout: float,
        *,
        env: dict[str, str] | None = None,
        tee: Callable[[str], None] | None = None,
    ) -> int | None:
        """Run a script with `bash -l` (or `sh`) in the home folder, its output as log lines.

        Returns the exit code, or None when it outlived `timeout` (> 0) and was killed.
        """
        import shutil
        import tempfile

        batcher = self.batcher(source)

        def add(line: str) -> None:
            batcher.add(line)
            if tee is not None:
                tee(line)

        lines = LineSplitter(add)
        folder = tempfile.mkdtemp(prefix="dockyard-")
        path = os.path.join(folder, source)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)
        with os.fdopen(fd, "w") as file:
            file.write(script)
        bash = shutil.which("bash")
        argv = [bash, "-l", path] if bash else ["sh", path]
        child = Child(lambda _fd, data: self._script_output(child, lines, data))
        try:
            try:
                await spawn(
                    child,
                    argv,
                    cwd=self.home,
                    env=child_env(env),
                    stdin=subprocess.DEVNULL,
                    stderr=subprocess.STDOUT,
                )
            except (OSError, ValueError, subprocess.SubprocessError) as exc:
                self.warn(f"cannot run the {source.replace('_', ' ')}: {exc}")
                return 127
            self.scripts.add(child)
            if self.shutting_down and source == "startup_script":
                # SIGTERM arrived while the script was being started.
                child.kill()
            done, _ = await asyncio.wait({child.exited}, timeout=timeout if timeout > 0 else None)
            if not done:
                child.kill()
                await child.exited
            await settle([child.outputs_done], child.activity)

            def finished(_: object) -> None:
                lines.close()
                child.close()

            # A background process may keep the output open: keep forwarding it, close once it ends.
            child.outputs_done.add_done_callback(finished)
            if child.outputs_done.done():
                lines.close()
            batcher.flush()
            return exit_status(child.exited.result())[0] if done else None
        finally:
            self.scripts.discard(child)
            with contextlib.suppress(OSError):
                os.unlink(path)
                os.rmdir(folder)

    def _script_output(self, child: Child, lines: LineSplitter, data: bytes) -> None:
        lines.feed(data)
        control = self.control
        if control is not None and not child.paused and control.buffered() > HIGH_WATER:
            child.pause()
            spawn_task(_resume_when_drained(control, child))

    async def _stats_loop(self) -> None:
        cpu = CpuMeter()
        cpu.sample()
        while True:
            interval = _number(self.welcome.get("stats_interval"), 15.0)
            await asyncio.sleep(interval if interval > 0 else 15.0)
            if interval <= 0 or self.control is None:
                continue
            used, limit = memory()
            disk_used, disk_total = disk(self.home)
            self.send(
                {
                    "type": "stats",
                    "cpu_cores": cpu.sample(),
                    "memory_bytes": used,
                    "memory_limit_bytes": limit,
                    "oom_kills": oom_kills(),
                    **pids(),
                    "disk_used_bytes": disk_used,
                    "disk_total_bytes": disk_total,
                    "disk_limit_bytes": disk_limit(),
                    "ports": listening_ports(),
                }
            )

    async def _shutdown(self) -> None:
        self.shutting_down = True
        log("shutting down")
        self.set_state("shutting_down")
        for child in list(self.scripts):
            child.kill()
        if self.startup is not None:
            # Let it reap the killed script (and close its pipes) before the shutdown script starts.
            await asyncio.wait({self.startup}, timeout=FLUSH_TIMEOUT)
        script = self.welcome.get("shutdown_script")
        code = None
        if isinstance(script, str) and script.strip():
            code = await self._run_script("shutdown_script", script, SHUTDOWN_SCRIPT_TIMEOUT)
            if code is None:
                self.warn(f"the shutdown script ran for {SHUTDOWN_SCRIPT_TIMEOUT:.0f} s and was killed")
        self.set_state("off", code)
        # The user's terminals and commands are going away with the workspace; let shells save history.
        for child in list(self.children):
            child.signal(signal.SIGHUP)
        await self._flush(FLUSH_TIMEOUT)

    async def _flush(self, budget: float) -> None:
        for batcher in self.batchers.values():
            batcher.flush()
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline:
            control = self.control
            if control is not None and not self.outbox and control.buffered() == 0:
                return
            await asyncio.sleep(0.01)

    # streams

    async def _stream(self, stream: str, message: dict[str, Any]) -> None:
        kind = message.get("kind")
        try:
            conn = await self.link.dial(self.token)
        except (OSError, LinkRefused, asyncio.TimeoutError) as exc:  # noqa: UP041 - distinct before 3.11
            self.warn(f"stream {stream}: cannot dial the control plane: {exc}")
            return
        try:
            conn.send_json({"type": "attach", "stream": stream, "token": self.token})
            handler = self.handlers.get(str(kind))
            if handler is None:
                conn.send_json(_error(f"unknown stream kind {kind!r}"))
            else:
                await handler(conn, message)
        except asyncio.CancelledError:
            conn.close()
            raise
        except Exception:  # noqa: BLE001 - a bug in one stream must not take the agent and every other stream down
            self.warn(f"stream {stream} ({kind}) failed:\n{traceback.format_exc()}")
        await conn.finish()

    def _cwd(self, value: Any) -> str:
        return os.path.join(self.home, value) if isinstance(value, str) and value else self.home

    async def _exec(self, conn: Conn, message: dict[str, Any]) -> None:
        argv = message.get("argv")
        shell = message.get("shell")
        if isinstance(shell, str) and shell:
            argv = ["sh", "-c", shell]
        if not isinstance(argv, list) or not argv or not all(isinstance(arg, str) for arg in argv):
            conn.send_json(_error("exec needs a non-empty argv (list of strings) or a shell command"))
            return
        cwd = self._cwd(message.get("cwd"))
        options = message.get("pty")
        try:
            if isinstance(options, dict):
                env = child_env(message.get("env"), str(options.get("term") or "xterm-256color"))
                child = await spawn_pty(
                    argv,
                    cwd=cwd,
                    env=env,
                    width=_size(options.get("width"), 80),
                    height=_size(options.get("height"), 24),
                    on_data=lambda data: forward(conn, STDOUT, data, child),
                )
            else:
                child = Child(lambda fd, data: forward(conn, STDOUT if fd == 1 else STDERR, data, child))
                await spawn(child, argv, cwd=cwd, env=child_env(message.get("env")))
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            code, text = spawn_failure(exc, argv[0], cwd)
            conn.send(STDERR, text.encode())
            conn.send_json({"type": "exit", "exit_code": code, "signal": None})
            return
        self.children.add(child)
        try:
            await run_attached(conn, child)
        finally:
            self.children.discard(child)
            child.close()

    async def _pty(self, conn: Conn, message: dict[str, Any]) -> None:
        key = message.get("reconnect")
        if not isinstance(key, str) or not key:
            key = os.urandom(8).hex()
        session = self.ptys.get(key)
        if session is None:
            command = message.get("command")
            shell = login_shell()
            argv = [shell, "-l", "-c", command] if isinstance(command, str) and command else [shell, "-l"]
            session = PtySession(self, key)
            try:
                await session.start(
                    argv,
                    cwd=self._cwd(message.get("cwd")),
                    env=child_env(message.get("env"), str(message.get("term") or "xterm-256color")),
                    width=_size(message.get("width"), 80),
                    height=_size(message.get("height"), 24),
                )
            except (OSError, ValueError, subprocess.SubprocessError) as exc:
                code, text = spawn_failure(exc, argv[0], self._cwd(message.get("cwd")))
                conn.send(STDOUT, text.encode())
                conn.send_json({"type": "exit", "exit_code": code, "signal": None})
                return
            self.ptys[key] = session
            await session.attach(conn, None, None)
        else:
            await session.attach(conn, message.get("width"), message.get("height"))

    async def _dial(self, conn: Conn, message: dict[str, Any]) -> None:
        host = message.get("host") or "127.0.0.1"
        port = message.get("port")
        if not isinstance(host, str) or not isinstance(port, int) or isinstance(port, bool):
            conn.send_json(_error("dial needs a host and an integer port"))
            return
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=READ_LIMIT), DIAL_TIMEOUT
            )
        except asyncio.TimeoutError:  # noqa: UP041 - distinct from TimeoutError before Python 3.11
            conn.send_json({"type": "error", "error": "connection timed out"})
            return
        except (OSError, ValueError) as exc:
            # ValueError: a host name IDNA cannot encode, or with a NUL byte.
            errno_ = getattr(exc, "errno", None)
            reason = os.strerror(errno_).lower() if errno_ and errno_ > 0 else str(exc)
            conn.send_json({"type": "error", "error": reason})
            return
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.send_json({"type": "ok"})
        try:
            await _pipe(conn, reader, writer)
        finally:
            writer.close()

    # files

    def _path(self, message: dict[str, Any]) -> str | None:
        path = message.get("path")
        if not isinstance(path, str) or not path or "\0" in path:
            return None
        return os.path.join(self.home, path)

    async def _file_read(self, conn: Conn, message: dict[str, Any]) -> None:
        path = self._path(message)
        if path is None:
            conn.send_json(_error("file_read needs a path: a non-empty string without NUL bytes"))
            return
        try:
            # O_NONBLOCK: opening a FIFO must not hang the agent waiting for a writer.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            conn.send_json(file_error(exc, path))
            return
        try:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                raise _oserror(errno.EISDIR, path)
            if not stat.S_ISREG(info.st_mode):
                raise _oserror(errno.EINVAL, path)
            conn.send_json(
                {
                    "type": "ok",
                    "size": info.st_size,
                    "mode": stat.S_IMODE(info.st_mode),
                    "mtime": info.st_mtime,
                }
            )
            while not conn.closing():
                data = os.read(fd, CHUNK)
                if not data:
                    conn.send(EOF)
                    return
                conn.send(STDOUT, data)
                await conn.drain()
                # Let other streams run between chunks of a large file.
                await asyncio.sleep(0)
        except OSError as exc:
            conn.send_json(file_error(exc, path))
        finally:
            os.close(fd)

    async def _file_write(self, conn: Conn, message: dict[str, Any]) -> None:
        import tempfile

        path = self._path(message)
        mode = message.get("mode")
        if path is None or not (mode is None or (isinstance(mode, int) and 0 <= mode <= 0o7777)):
            conn.send_json(_error("file_write needs a path and a mode between 0 and 0o7777 (or null)"))
            return
        target = os.path.realpath(path) if os.path.islink(path) else path
        folder, name = os.path.split(target)
        try:
            if message.get("mkdir"):
                os.makedirs(folder, exist_ok=True)
            if os.path.isdir(target):
                raise _oserror(errno.EISDIR, path)
            fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{name[:200]}.", suffix=".dockyard")
        except OSError as exc:
            conn.send_json(file_error(exc, path))
            return
        size = 0
        renamed = False
        try:
            while True:
                frame = await conn.recv()
                if frame is None:
                    return
                kind, payload = frame
                if kind == EOF:
                    break
                if kind == STDIN:
                    view = memoryview(payload)
                    while view:
                        view = view[os.write(fd, view) :]
                    size += len(payload)
            if mode is None:
                try:
                    mode = stat.S_IMODE(os.stat(target).st_mode)
                except FileNotFoundError:
                    mode = 0o666 & ~self.umask
            os.fchmod(fd, mode)
            os.close(fd)
            fd = -1
            os.replace(temporary, target)
            renamed = True
            conn.send_json({"type": "ok", "size": size})
        except OSError as exc:
            conn.send_json(file_error(exc, path))
        finally:
            if fd >= 0:
                os.close(fd)
            if not renamed:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)

    async def _file_delete(self, conn: Conn, message: dict[str, Any]) -> None:
        import shutil

        path = self._path(message)
        if path is None:
            conn.send_json(_error("file_delete needs a path: a non-empty string without NUL bytes"))
            return
        try:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                os.unlink(path)
            elif message.get("recursive") is True:
                # A big tree can take seconds; the other streams keep running meanwhile.
                await asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, path)
            else:
                try:
                    os.rmdir(path)
                except OSError as exc:
                    if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                        raise _oserror(errno.EISDIR, path) from exc
                    raise
        except OSError as exc:
            where = exc.filename if isinstance(exc.filename, str) and exc.filename != path else path
            conn.send_json(file_error(exc, where))
            return
        conn.send_json({"type": "ok"})

    async def _file_list(self, conn: Conn, message: dict[str, Any]) -> None:
        path = self._path(message)
        if path is None:
            conn.send_json(_error("file_list needs a path: a non-empty string without NUL bytes"))
            return
        entries: list[dict[str, Any]] = []
        try:
            with os.scandir(path) as listing:
                for entry in listing:
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        # Gone between listing and stat: it is no longer an entry.
                        continue
                    entries.append(
                        {
                            "name": entry.name,
                            "type": _kind(info.st_mode),
                            "size": info.st_size,
                            "mode": stat.S_IMODE(info.st_mode),
                            "mtime": info.st_mtime,
                        }
                    )
        except OSError as exc:
            conn.send_json(file_error(exc, path))
            return
        entries.sort(key=lambda entry: str(entry["name"]))
        reply: dict[str, Any] = {"type": "ok", "entries": entries}
        size = len(encode_json(reply))
        while size > MAX_FRAME:
            # A folder with tens of thousands of entries does not fit in one frame: say so rather than fail.
            keep = int(len(entries) * MAX_FRAME * 0.9 / size)
            reply = {"type": "ok", "entries": entries[:keep], "truncated": True}
            size = len(encode_json(reply))
        conn.send_json(reply)

    async def _file_stat(self, conn: Conn, message: dict[str, Any]) -> None:
        path = self._path(message)
        if path is None:
            conn.send_json(_error("file_stat needs a path: a non-empty string without NUL bytes"))
            return
        try:
            info = os.lstat(path)
        except OSError as exc:
            conn.send_json(file_error(exc, path))
            return
        conn.send_json(
            {
                "type": "ok",
                "kind": _kind(info.st_mode),
                "size": info.st_size,
                "mode": stat.S_IMODE(info.st_mode),
                "mtime": info.st_mtime,
            }
        )


async def _pipe(conn: Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Raw bytes both ways between a stream to the control plane and a local connection, until both ends
    are done or either fails."""
    tasks = {spawn_task(_copy(conn.reader, writer)), spawn_task(_copy(reader, conn.writer))}
    while tasks:
        done, tasks = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if not all(task.result() for task in done):
            for task in tasks:
                task.cancel()
            break


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Copy until EOF and pass the half-close on; False when either side failed."""
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            writer.write(data)
            if writer.transport.get_write_buffer_size() > HIGH_WATER:
                await writer.drain()
        if writer.can_write_eof() and not writer.is_closing():
            writer.write_eof()
    except OSError:
        return False
    return True


# Clone the repository (unless a previous start did) and check out the task branch: the one the repository
# already has, or a new one from the default branch the clone checked out. Values arrive in the environment,
# never in the script's text.
CLONE_SCRIPT = r"""set -e
# git clone [OPTIONS] -- REPOSITORY WHERE, from the server's mirror of the repository when the agent found it
# fetched for this start (then pointed at the repository itself), else over the network.
clone() {
  where="$1"
  shift
  if [ -n "${DOCKYARD_GIT_MIRROR:-}" ]; then
    # The mirror belongs to the server's user: git reads another user's repository only where the global
    # configuration says it is safe (GIT_CONFIG_GLOBAL, for this one command; the user's own is included).
    config="$(mktemp)"
    printf '[include]\n\tpath = ~/.gitconfig\n[safe]\n\tdirectory = %s\n' "$DOCKYARD_GIT_MIRROR" > "$config"
    if GIT_CONFIG_GLOBAL="$config" git clone --quiet --no-hardlinks "$@" -- "$DOCKYARD_GIT_MIRROR" "$where" \
        2>"$config.err"; then
      rm -f "$config" "$config.err"
      git -C "$where" remote set-url origin "$DOCKYARD_GIT_REPO"
      echo "cloned $DOCKYARD_GIT_REPO from the server's mirror"
      return 0
    fi
    # Prefixed, so that a start error quotes the network clone's own words, not these.
    sed 's/^/mirror: /' "$config.err"
    rm -f "$config" "$config.err"
    echo "cloning from the server's mirror failed: cloning $DOCKYARD_GIT_REPO"
  fi
  git clone "$@" -- "$DOCKYARD_GIT_REPO" "$where"
}
case "$DOCKYARD_GIT_PATH" in
  /*) dir="$DOCKYARD_GIT_PATH" ;;
  *) dir="$HOME/$DOCKYARD_GIT_PATH" ;;
esac
if [ ! -e "$dir/.git" ]; then
  if [ -d "$dir" ] && [ -n "$(ls -A "$dir")" ]; then
    # A folder the image already filled (a dev container's workspace folder): clone beside it, move the
    # repository in and check it out over the files, which the repository's own versions replace.
    tmp="$(mktemp -d)"
    clone "$tmp/clone" --no-checkout
    mv "$tmp/clone/.git" "$dir/.git"
    rm -rf "$tmp"
    git -C "$dir" reset --quiet --hard
  else
    clone "$dir"
  fi
fi
cd "$dir"
branch="$DOCKYARD_GIT_BRANCH"
if [ -n "$branch" ]; then
  if git show-ref --verify --quiet "refs/heads/$branch"; then
    git checkout --quiet "$branch" --
  elif git show-ref --verify --quiet "refs/remotes/origin/$branch"; then
    git checkout --quiet --track -b "$branch" "origin/$branch" --
  else
    git checkout --quiet -b "$branch"
  fi
  echo "on branch $branch"
fi
"""
_GIT_MESSAGE_PREFIXES = ("fatal:", "error:", "remote:", "dockyard-agent:")


def clone_error(lines: list[str], repo: str) -> str:
    """One line saying why the clone failed, in git's own words (and the credential helper's)."""
    picked = [line.strip() for line in lines if line.strip().startswith(_GIT_MESSAGE_PREFIXES)]
    picked = list(dict.fromkeys(picked))[-4:] or [line.strip() for line in lines[-2:]]
    return f"cloning {repo} failed: " + " ".join(picked)


def git_helper_env(tool: str, environ: Any = None) -> dict[str, str]:
    """Git configuration through the environment (git 2.31+): `dockyard-agent git-credential` as the
    credential helper of every git the agent's children run. Nothing is written to the workspace's disk."""
    environ = os.environ if environ is None else environ
    try:
        index = int(environ.get("GIT_CONFIG_COUNT", "0"))
    except ValueError:
        index = 0
    quoted = "'" + tool.replace("'", "'\\''") + "'"
    return {
        "GIT_CONFIG_COUNT": str(index + 1),
        f"GIT_CONFIG_KEY_{index}": "credential.helper",
        f"GIT_CONFIG_VALUE_{index}": f"!{quoted} git-credential",
    }


def git_proxy_env(proxy: str, repo: str, environ: Any = None) -> dict[str, str]:
    """Git configuration through the environment: the repository's URL rewritten to the agent's git proxy."""
    environ = os.environ if environ is None else environ
    try:
        index = int(environ.get("GIT_CONFIG_COUNT", "0"))
    except ValueError:
        index = 0
    return {
        "GIT_CONFIG_COUNT": str(index + 1),
        f"GIT_CONFIG_KEY_{index}": f"url.{proxy}.insteadOf",
        f"GIT_CONFIG_VALUE_{index}": repo,
    }


USAGE = (
    "usage: agent.py [--socket PATH | --url URL[,URL...] [--ca-bundle FILE]] [--token-file PATH | --token TOKEN]\n"
    "(default: $DOCKYARD_AGENT_SOCKET or $DOCKYARD_URL with $DOCKYARD_CA_BUNDLE, "
    "$DOCKYARD_AGENT_TOKEN_FILE or $DOCKYARD_AGENT_TOKEN)"
)


def parse_args(argv: list[str]) -> dict[str, str]:
    options: dict[str, str] = {}
    args = iter(argv)
    for arg in args:
        name, equals, value = arg.partition("=")
        if name in ("-h", "--help"):
            raise SystemExit(USAGE)
        if name == "--version":
            print(VERSION)
            raise SystemExit(0)
        if name not in ("--socket", "--url", "--ca-bundle", "--token", "--token-file"):
            raise SystemExit(f"unknown argument {arg!r}\n{USAGE}")
        if not equals:
            value = next(args, "")
        options[name[2:]] = value
    return options


def read_token(path: str) -> str:
    """The token from its file: the runtime keeps it out of the environment, which the engine shows to others."""
    with open(path, encoding="utf-8") as handle:
        return handle.read(4096).strip()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["report"]:
        return report_main(argv[1:])
    if argv[:1] == ["git-credential"]:
        return git_credential_main(argv[1:])
    options = parse_args(argv)
    socket_path = options.get("socket") or os.environ.get("DOCKYARD_AGENT_SOCKET", "")
    # A URL wins over the socket: a runtime that sets both means the network (the socket may not exist).
    urls = (options.get("url") or os.environ.get("DOCKYARD_URL", "")).split(",")
    ca_bundle = options.get("ca-bundle") or os.environ.get("DOCKYARD_CA_BUNDLE", "")
    link = Link(socket_path, [url for url in urls if url.strip()], ca_bundle)
    token_file = options.get("token-file") or os.environ.get("DOCKYARD_AGENT_TOKEN_FILE", "")
    token = options.get("token") or ("" if token_file else os.environ.get("DOCKYARD_AGENT_TOKEN", ""))
    if token_file and not token:
        try:
            token = read_token(token_file)
        except OSError as exc:
            log(f"cannot read the agent token: {exc}")
            return 2
    if not (socket_path or link.urls) or not token:
        log(
            "no control plane: set DOCKYARD_AGENT_SOCKET (or DOCKYARD_URL) and DOCKYARD_AGENT_TOKEN_FILE "
            "(or --socket/--url and --token-file)"
        )
        return 2

    async def run() -> int:
        return await Agent(socket_path, token, link=link).run()

    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
