"""The API's WebSocket streams (exec, terminals, TCP dials, SSH tunnels) on websockets' synchronous client.

    with client.exec_stream("dev", ExecRequest(command=["make", "test"])) as proc:
        proc.close_stdin()
        for event in proc:
            if isinstance(event, Output):
                sys.stdout.buffer.write(event.data)
        print(proc.exited)

    with client.dial("dev", 8080) as tcp:
        splice(tcp, local.recv_chunk, local.sendall)

A refused handshake (the server answers with its usual JSON error instead of upgrading) and a close with code
4000 + status after the upgrade both raise `ApiError`, exactly as a REST call would. A connection that cannot be
made at all raises `ConnectionFailed`.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode

from pydantic import ValidationError
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection, connect

from dockyard_sdk import models as m
from dockyard_sdk.errors import ApiError, ConnectionFailed, error_for
from dockyard_sdk.version import __version__

if TYPE_CHECKING:
    import ssl

STDOUT = 1
STDERR = 2
# Errors after the upgrade close the socket with 4000 + the HTTP status the error would have had.
CLOSE_STATUS_BASE = 4000
# Agents send at most 1 MiB per frame; the margin covers a server that joins a few.
_MAX_MESSAGE = 16 * 2**20
# Reads of this size keep SSH and file copies at full speed without holding much memory per stream.
CHUNK = 256 * 1024


class StreamClosed(Exception):
    """The stream has ended: nothing more can be sent on it."""


def websocket_url(base_url: str, path: str, params: Mapping[str, Any] | None = None) -> str:
    """`http(s)://host/prefix` + path as the `ws(s)://` URL of the same server."""
    if base_url.startswith("https://"):
        url = "wss://" + base_url.removeprefix("https://")
    elif base_url.startswith("http://"):
        url = "ws://" + base_url.removeprefix("http://")
    else:
        raise ValueError(f"{base_url!r} is not an http:// or https:// URL")
    query = {key: value for key, value in (params or {}).items() if value is not None}
    return url.rstrip("/") + path + (f"?{urlencode(query)}" if query else "")


def denied(status: int, body: bytes, url: str) -> ApiError:
    """The `ApiError` of a refused handshake, from the JSON error body the server answers it with."""
    try:
        error = m.ErrorResponse.model_validate_json(body)
    except ValidationError:
        error = m.ErrorResponse(message=f"HTTP {status}", detail=body.decode(errors="replace")[:500])
    return error_for(
        status, error.message, detail=error.detail, validations=error.validations, method="GET", url=url
    )


class Socket(Protocol):
    """What the stream classes need of a WebSocket (tests substitute an in-process one)."""

    def send_bytes(self, data: bytes) -> None: ...

    def send_json(self, message: Mapping[str, Any]) -> None: ...

    def recv(self, timeout: float | None = None) -> bytes | dict[str, Any] | None: ...

    def close(self) -> None: ...


class WebSocket:
    """One open WebSocket: bytes and JSON messages both ways; the server's error closes become `ApiError`."""

    def __init__(self, connection: ClientConnection, url: str) -> None:
        self.connection = connection
        self.url = url

    def _closed(self, exc: ConnectionClosed) -> Exception | None:
        """The error a close stands for; None for a normal close (the stream simply ended)."""
        received = exc.rcvd
        if received is not None and received.code >= CLOSE_STATUS_BASE:
            return error_for(
                received.code - CLOSE_STATUS_BASE, received.reason or "the server closed the stream",
                method="GET", url=self.url,
            )  # fmt: skip
        if received is not None and received.code in (1000, 1001):
            return None
        if received is None and exc.sent is not None and exc.sent.code == 1000:
            return None  # closed from this side
        reason = f" ({received.code} {received.reason})".rstrip() if received is not None else ""
        return ConnectionFailed(f"the connection to Dockyard was lost{reason}")

    def send_bytes(self, data: bytes) -> None:
        try:
            self.connection.send(data)
        except ConnectionClosed as exc:
            error = self._closed(exc)
            raise (error or StreamClosed("the stream has ended")) from exc

    def send_json(self, message: Mapping[str, Any]) -> None:
        try:
            self.connection.send(json.dumps(message))
        except ConnectionClosed as exc:
            error = self._closed(exc)
            raise (error or StreamClosed("the stream has ended")) from exc

    def recv(self, timeout: float | None = None) -> bytes | dict[str, Any] | None:
        """The next message (bytes, or a text message's JSON object); None once the stream has ended.

        Raises `TimeoutError` when nothing arrives within `timeout` seconds.
        """
        try:
            message = self.connection.recv(timeout)
        except ConnectionClosed as exc:
            error = self._closed(exc)
            if error is not None:
                raise error from exc
            return None
        if isinstance(message, bytes):
            return message
        try:
            decoded = json.loads(message)
        except ValueError as exc:
            raise ConnectionFailed(
                f"the server sent a text message that is not JSON: {message[:80]!r}"
            ) from exc
        if not isinstance(decoded, dict):
            raise ConnectionFailed(f"the server sent JSON that is not an object: {message[:80]!r}")
        return decoded

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> WebSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_websocket(
    base_url: str,
    path: str,
    params: Mapping[str, Any] | None = None,
    *,
    headers: Mapping[str, str],
    ssl_context: ssl.SSLContext | None,
    open_timeout: float = 30,
) -> WebSocket:
    url = websocket_url(base_url, path, params)
    try:
        connection = connect(
            url,
            additional_headers=dict(headers),
            ssl=ssl_context if url.startswith("wss://") else None,
            user_agent_header=headers.get("User-Agent", f"dockyard-sdk/{__version__}"),
            # SSH and most TCP payloads are encrypted or compressed already; deflate would only cost CPU.
            compression=None,
            max_size=_MAX_MESSAGE,
            open_timeout=open_timeout,
        )
    except InvalidStatus as exc:
        raise denied(exc.response.status_code, bytes(exc.response.body or b""), url) from exc
    except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
        raise ConnectionFailed(f"Cannot reach Dockyard at {base_url}: {exc}") from exc
    return WebSocket(connection, url)


# --- exec ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PtySize:
    width: int = 80
    height: int = 24
    term: str = "xterm-256color"


@dataclass(frozen=True)
class Output:
    """Bytes a command wrote; `stream` is STDOUT (1) or STDERR (2)."""

    stream: int
    data: bytes


@dataclass(frozen=True)
class Exited:
    exit_code: int | None
    signal: str | None = None
    timed_out: bool = False


class ExecStream:
    """A command running in a workspace: write its stdin, read its output as it comes, then its exit."""

    def __init__(self, socket: Socket) -> None:
        self.socket = socket
        self.exited: Exited | None = None

    def write(self, data: bytes) -> None:
        if data:
            self.socket.send_bytes(data)

    def close_stdin(self) -> None:
        self.socket.send_json({"type": "eof"})

    def resize(self, width: int, height: int) -> None:
        self.socket.send_json({"type": "resize", "width": width, "height": height})

    def signal(self, name: str) -> None:
        """Send a signal by name without `SIG`, e.g. INT or TERM."""
        self.socket.send_json({"type": "signal", "signal": name.upper().removeprefix("SIG")})

    def recv(self, timeout: float | None = None) -> Output | Exited:
        """The next output chunk, or the exit; `StreamClosed` after the exit or if the stream ends early."""
        if self.exited is not None:
            raise StreamClosed("the command has exited")
        while True:
            message = self.socket.recv(timeout)
            if message is None:
                raise StreamClosed("the exec stream ended before the command exited")
            if isinstance(message, bytes):
                if len(message) > 1 and message[0] in (STDOUT, STDERR):
                    return Output(message[0], message[1:])
                continue
            if message.get("type") == "exit":
                code = message.get("exit_code")
                signal = message.get("signal")
                self.exited = Exited(
                    int(code) if isinstance(code, int) else None,
                    str(signal) if signal else None,
                    timed_out=bool(message.get("timed_out")),
                )
                return self.exited

    def __iter__(self) -> Iterator[Output | Exited]:
        while self.exited is None:
            yield self.recv()

    def wait(self) -> tuple[bytes, bytes, Exited]:
        """Read everything to the end: (stdout, stderr, exit)."""
        out, err = bytearray(), bytearray()
        for event in self:
            if isinstance(event, Output):
                (out if event.stream == STDOUT else err).extend(event.data)
        assert self.exited is not None
        return bytes(out), bytes(err), self.exited

    def close(self) -> None:
        # Closing before the exit kills the command's process group on the agent's side.
        self.socket.close()

    def __enter__(self) -> ExecStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_exec(socket: Socket, request: m.ExecRequest, *, pty: PtySize | None = None) -> ExecStream:
    """Send the opening message on an exec socket; `request.stdin`, if set, is sent and closed at once.

    The server kills the command after `request.timeout` seconds (its default when unset).
    """
    opening = request.model_dump(
        mode="json", exclude_unset=True, exclude={"stdin", "max_output_bytes", "encoding"}
    )
    opening["command"] = request.command
    if pty is not None:
        opening["pty"] = {"width": pty.width, "height": pty.height, "term": pty.term}
    socket.send_json(opening)
    stream = ExecStream(socket)
    if request.stdin is not None:
        stream.write(request.stdin.encode())
        stream.close_stdin()
    return stream


# --- terminals -------------------------------------------------------------------------------------------------


class Pty:
    """A reconnecting terminal. `recv` returns b"" once the shell has exited (see `exit_code`) or the stream
    ended; reconnect later with the same `reconnect` id to get the recent output and carry on."""

    def __init__(self, socket: Socket, reconnect: str) -> None:
        self.socket = socket
        self.reconnect = reconnect
        self.exit_code: int | None = None
        self.ended = False

    def send(self, data: bytes) -> None:
        if data:
            self.socket.send_bytes(data)

    def recv(self, timeout: float | None = None) -> bytes:
        while not self.ended:
            message = self.socket.recv(timeout)
            if message is None:
                self.ended = True
            elif isinstance(message, bytes):
                if message:
                    return message
            elif message.get("type") == "exit":
                code = message.get("exit_code")
                self.exit_code = code if isinstance(code, int) else None
                self.ended = True
        return b""

    def resize(self, width: int, height: int) -> None:
        self.socket.send_json({"type": "resize", "width": width, "height": height})

    def close(self) -> None:
        # The terminal keeps running on the agent; only this attachment ends.
        self.socket.close()

    def __enter__(self) -> Pty:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def new_reconnect_id() -> str:
    return secrets.token_hex(16)


# --- raw bytes: TCP dials and SSH tunnels ----------------------------------------------------------------------


class ByteStream:
    """A byte pipe to a port in a workspace (or to the SSH gateway); `recv` returns b"" at the end."""

    def __init__(self, socket: Socket) -> None:
        self.socket = socket

    def send(self, data: bytes) -> None:
        if data:
            self.socket.send_bytes(data)

    def recv(self, timeout: float | None = None) -> bytes:
        while True:
            message = self.socket.recv(timeout)
            if message is None:
                return b""
            if isinstance(message, bytes):
                if message:
                    return message
            elif message.get("type") == "error":
                raise ConnectionFailed(str(message.get("error") or message.get("message") or message))

    def close(self) -> None:
        self.socket.close()

    def __enter__(self) -> ByteStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def splice(stream: ByteStream, read: Callable[[], bytes], write: Callable[[bytes], None]) -> None:
    """Copy `read()` to the stream and the stream to `write` until either side ends, then close the stream.

    `read` returns b"" at its end. The local-to-remote copy runs in a daemon thread: a blocking read (a terminal's
    stdin) cannot be interrupted, so it is left to end with the process; a caller holding a socket should close
    it after this returns, which ends that thread too. Errors of the remote side (`ApiError`,
    `ConnectionFailed`) are raised here; a local side that fails simply ends the copy.
    """

    def upstream() -> None:
        try:
            while True:
                data = read()
                if not data:
                    break
                stream.send(data)
        except (OSError, ValueError, StreamClosed, ApiError, ConnectionFailed):
            # ValueError: reading a file object closed under us; the remote side reports its own errors.
            pass
        finally:
            # No half-close exists on the WebSocket: the local end closing ends the whole stream.
            stream.close()

    sender = threading.Thread(target=upstream, name="dockyard-splice-up", daemon=True)
    sender.start()
    try:
        while True:
            data = stream.recv()
            if not data:
                break
            write(data)
    except OSError:
        pass  # the local side stopped taking data (EPIPE): nothing left to deliver
    finally:
        stream.close()
