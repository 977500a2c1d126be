"""`dockyard ssh --stdio NAME`, the ProxyCommand OpenSSH starts for every `ssh dockyard.NAME`, on the standard
library alone.

Every SSH connection, scp and rsync waits for this process to start, and importing the rest of the CLI (Typer,
pydantic, httpx, Rich) takes longer than the SSH handshake itself. So `dockyard.cli.entry` sends this one command
here before any of that is imported: the credentials file is read as the CLI reads it, and the SSH bytes travel in
the binary frames of a WebSocket (RFC 6455) to `/api/v2/workspaces/{id}/ssh`, as `Client.ssh_tunnel` carries
them. Refusals print like the rest of the CLI: `error: <the server's message>` on stderr, exit 1.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from dockyard import __version__
from dockyard.cli import config
from dockyard.cli.errors import CliError

if TYPE_CHECKING:
    import ssl

# The server closes with 4000 + the HTTP status an error would have had (sdk.streams.CLOSE_STATUS_BASE).
CLOSE_STATUS_BASE = 4000
CHUNK = 256 * 1024
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_HEADER = 64 * 1024
_CONNECT_TIMEOUT = 30.0
# The certificate is renewed in the background when this little is left (as `connect._RENEW_WITHIN`).
_RENEW_WITHIN_SECONDS = 8 * 3600
_HINTS = {
    401: "Run `dockyard login` (or set DOCKYARD_TOKEN) with a valid token.",
    403: "Your role or your token's scopes do not allow this.",
}

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class Refused(Exception):
    """The server refused or ended the stream with an error; printed like an `ApiError`."""

    def __init__(self, status: int, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail


def parse_args(argv: Sequence[str]) -> tuple[str, str] | None:
    """(workspace, host prefix) from `ssh --stdio [--host-prefix P] NAME`; None for anything else, which the
    full CLI then parses (and explains)."""
    if len(argv) < 3 or argv[0] != "ssh" or argv[1] != "--stdio":
        return None
    rest, prefix = list(argv[2:]), ""
    if rest and rest[0].startswith("--host-prefix="):
        prefix = rest.pop(0).partition("=")[2]
    elif len(rest) == 3 and rest[0] == "--host-prefix":
        prefix = rest[1]
        rest = rest[2:]
    if len(rest) != 1 or rest[0].startswith("-"):
        return None
    return rest[0], prefix


def workspace_ref(host: str, prefix: str) -> str:
    """The workspace a host name means: `dockyard.dev` is your `dev`, `dockyard.alice.dev` is alice's `dev`
    (the SSH gateway reads user names the same way)."""
    name = host.removeprefix(prefix) if prefix else host
    owner, dot, rest = name.partition(".")
    return f"{owner}/{rest}" if dot else name


# --- a WebSocket client, as small as the ProxyCommand needs -----------------------------------------------------


def _ssl_context() -> ssl.SSLContext:
    # Imported only for https: a plain loopback URL does not pay for OpenSSL's initialisation.
    import ssl

    # The trust store httpx (and so the rest of the CLI) uses: SSL_CERT_FILE/SSL_CERT_DIR, else certifi's.
    cafile, capath = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
    if not cafile and not capath:
        import certifi  # only https needs it

        cafile = certifi.where()
    return ssl.create_default_context(cafile=cafile or None, capath=capath or None)


class WebSocket:
    """One client WebSocket on a blocking socket: binary messages both ways, pings answered."""

    def __init__(self, sock: socket.socket, buffered: bytes) -> None:
        self.sock = sock
        self._buffer = bytearray(buffered)
        self._send_lock = threading.Lock()
        self.closed = False

    @classmethod
    def connect(cls, base_url: str, path: str, token: str) -> WebSocket:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CliError(f"{base_url!r} is not an http:// or https:// URL")
        secure = parts.scheme == "https"
        port = parts.port or (443 if secure else 80)
        try:
            sock = socket.create_connection((parts.hostname, port), timeout=_CONNECT_TIMEOUT)
            if secure:
                sock = _ssl_context().wrap_socket(sock, server_hostname=parts.hostname)
        except OSError as exc:
            raise _unreachable(base_url, exc) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16))
        host = parts.netloc.rpartition("@")[2]
        request = (
            f"GET {parts.path.rstrip('/')}{path} HTTP/1.1\r\n"
            f"Host: {host}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {token}\r\n"
            f"User-Agent: dockyard-cli/{__version__}\r\n"
            "\r\n"
        )
        try:
            sock.sendall(request.encode())
            head, rest = _read_head(sock)
            status, headers = _parse_head(head)
            if status != 101:
                raise _refusal(status, _read_body(sock, rest, headers))
            accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())  # noqa: S324 - RFC 6455 says SHA-1
            if headers.get("sec-websocket-accept", "").encode() != accept:
                raise CliError(f"{base_url} answered the WebSocket handshake wrongly")
        except OSError as exc:
            sock.close()
            raise _unreachable(base_url, exc) from exc
        except (CliError, Refused):
            sock.close()
            raise
        sock.settimeout(None)
        return cls(sock, rest)

    def send(self, data: bytes, *, opcode: int = OP_BINARY) -> None:
        mask = os.urandom(4)
        size = len(data)
        if size < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
        elif size < 2**16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
        masked = _mask(data, mask)
        with self._send_lock:
            self.sock.sendall(header + mask + masked)

    def recv(self) -> bytes:
        """The next bytes; b"" once the server has closed normally. `Refused` for an error close, `CliError` for
        an error message (as `sdk.streams.ByteStream` reads them: JSON text, `{"type": "error"}`)."""
        while True:
            opcode, message = self._message()
            if opcode is None:
                return b""
            if opcode == OP_TEXT:
                _text_message(message)
            elif message:
                return message

    def _message(self) -> tuple[int | None, bytes]:
        message = bytearray()
        kind = OP_BINARY
        while True:
            first, second = self._read(2)
            opcode, final = first & 0x0F, first & 0x80
            size = second & 0x7F
            if size == 126:
                (size,) = struct.unpack("!H", self._read(2))
            elif size == 127:
                (size,) = struct.unpack("!Q", self._read(8))
            payload = self._read(size)
            if opcode == OP_PING:
                self.send(payload, opcode=OP_PONG)
            elif opcode == OP_CLOSE:
                self._on_close(payload)
                return None, b""
            elif opcode in (OP_BINARY, OP_TEXT, OP_CONTINUATION):
                if opcode != OP_CONTINUATION:
                    kind = opcode
                message += payload
                if final:
                    return kind, bytes(message)

    def _on_close(self, payload: bytes) -> None:
        code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
        reason = payload[2:].decode(errors="replace")
        if not self.closed:
            self.close(code if code in (1000, 1001) else 1000)
        if code >= CLOSE_STATUS_BASE:
            raise Refused(code - CLOSE_STATUS_BASE, reason or "the server closed the stream")
        if code not in (1000, 1001, 1005):
            raise CliError(f"the connection to Dockyard was lost ({code} {reason})".replace(" )", ")"))

    def _read(self, size: int) -> bytes:
        while len(self._buffer) < size:
            data = self.sock.recv(max(CHUNK, size - len(self._buffer)))
            if not data:
                raise CliError("the connection to Dockyard was lost")
            self._buffer += data
        chunk = bytes(self._buffer[:size])
        del self._buffer[:size]
        return chunk

    def close(self, code: int = 1000) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(OSError):  # already gone: nothing to tell it
            self.send(struct.pack("!H", code), opcode=OP_CLOSE)


def _text_message(message: bytes) -> None:
    """A text message on a byte stream is the server's JSON word about it; only an error matters here."""
    try:
        decoded = json.loads(message)
    except ValueError:
        raise CliError(f"the server sent a text message that is not JSON: {message[:80]!r}") from None
    if isinstance(decoded, dict) and decoded.get("type") == "error":
        raise CliError(str(decoded.get("error") or decoded.get("message") or decoded))


def _mask(data: bytes, mask: bytes) -> bytes:
    # One XOR of two big integers runs in C: a 256 KiB frame costs microseconds, not a Python loop per byte.
    size = len(data)
    repeated = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(data, "little") ^ int.from_bytes(repeated, "little")).to_bytes(size, "little")


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk or len(data) > _MAX_HEADER:
            raise OSError("the server closed the connection during the WebSocket handshake")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    status_line, *lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(status_line.split()[1])
    except (IndexError, ValueError):
        raise OSError(f"not an HTTP answer: {status_line[:80]!r}") from None
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def _read_body(sock: socket.socket, rest: bytes, headers: dict[str, str]) -> bytes:
    try:
        length = min(int(headers.get("content-length", "0")), _MAX_HEADER)
    except ValueError:
        length = 0
    sock.settimeout(5)
    while len(rest) < length:
        chunk = sock.recv(length - len(rest))
        if not chunk:
            break
        rest += chunk
    return rest[:length]


def _refusal(status: int, body: bytes) -> Refused:
    try:
        error = json.loads(body)
        return Refused(status, str(error["message"]), str(error.get("detail") or ""))
    except (ValueError, KeyError, TypeError):
        return Refused(status, f"HTTP {status}", body.decode(errors="replace")[:500])


def _unreachable(url: str, exc: OSError) -> CliError:
    return CliError(
        f"cannot reach Dockyard at {url}",
        detail=str(exc),
        hint="check the URL and that the server is running",
    )


# --- the command ----------------------------------------------------------------------------------------------


def _workspace_id(credentials: config.Credentials, ref: str) -> str:
    """An `owner/name` resolved to its id (the WebSocket path names a workspace by id or your own name)."""
    owner, _, name = ref.partition("/")
    import http.client  # only `owner/name` needs a REST call

    parts = urlsplit(credentials.url)
    host = parts.netloc.rpartition("@")[2]
    connection = (
        http.client.HTTPSConnection(host, timeout=_CONNECT_TIMEOUT, context=_ssl_context())
        if parts.scheme == "https"
        else http.client.HTTPConnection(host, timeout=_CONNECT_TIMEOUT)
    )
    try:
        connection.request(
            "GET",
            f"{parts.path.rstrip('/')}/api/v2/users/{quote(owner, safe='')}/workspace/{quote(name, safe='')}",
            headers={
                "Authorization": f"Bearer {credentials.token}",
                "User-Agent": f"dockyard-cli/{__version__}",
            },
        )
        response = connection.getresponse()
        body = response.read()
    except OSError as exc:
        raise _unreachable(credentials.url, exc) from exc
    finally:
        connection.close()
    if response.status != 200:
        raise _refusal(response.status, body)
    return str(json.loads(body)["id"])


def certificate_expires(path: Path) -> float | None:
    """When an ed25519 OpenSSH certificate stops being valid (epoch seconds); None when it cannot be read."""
    try:
        blob = base64.b64decode(path.read_text().split()[1])
        offset = 0

        def string() -> bytes:
            nonlocal offset
            (size,) = struct.unpack_from("!I", blob, offset)
            offset += 4 + size
            return blob[offset - size : offset]

        if string() != b"ssh-ed25519-cert-v01@openssh.com":
            return None
        string()  # nonce
        string()  # public key
        offset += 8 + 4  # serial, type
        string()  # key id
        string()  # principals
        (_, valid_before) = struct.unpack_from("!QQ", blob, offset)
    except (OSError, IndexError, ValueError, struct.error):
        return None
    return float(valid_before)


def _renew_if_expiring(credentials: config.Credentials) -> None:
    folder = config.config_dir() / "ssh"
    if not (folder / "id_ed25519").exists():
        return
    expires = certificate_expires(folder / "id_ed25519-cert.pub")
    if expires is not None and expires - time.time() > _RENEW_WITHIN_SECONDS:
        return

    def renew() -> None:
        # Rare (a few times a day at most): the full CLI's renewal, imported off the connection's path.
        from dockyard.cli.connect import _renew_quietly

        _renew_quietly(credentials)

    threading.Thread(target=renew, name="dockyard-ssh-cert", daemon=True).start()


def _write_stdout(data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(1, view)
        view = view[written:]


def splice(ws: WebSocket) -> None:
    """stdin to the WebSocket (in a daemon thread) and the WebSocket to stdout, until either side ends."""

    def upstream() -> None:
        try:
            while data := os.read(0, CHUNK):
                ws.send(data)
        except OSError:
            pass  # the connection or stdin is gone: the reading side reports the connection's errors
        finally:
            # No half-close exists on the WebSocket: the local end closing ends the whole stream.
            ws.close()

    threading.Thread(target=upstream, name="dockyard-splice-up", daemon=True).start()
    try:
        while data := ws.recv():
            _write_stdout(data)
    except OSError:
        pass  # stdout is gone (EPIPE): nothing left to deliver
    finally:
        ws.close()


def run(ref: str, prefix: str) -> None:
    """Connect stdin/stdout to the workspace's SSH gateway; errors as `CliError` or `Refused`."""
    credentials = config.credentials()
    target = workspace_ref(ref, prefix)
    if "/" in target:
        target = _workspace_id(credentials, target)
    ws = WebSocket.connect(
        credentials.url, f"/api/v2/workspaces/{quote(target, safe='')}/ssh", credentials.token
    )
    _renew_if_expiring(credentials)
    splice(ws)


def main(argv: Sequence[str]) -> int:
    parsed = parse_args(argv)
    assert parsed is not None
    try:
        run(*parsed)
    except Refused as exc:
        _print_error(exc.message, exc.detail, _HINTS.get(exc.status, ""))
        return 1
    except CliError as exc:
        _print_error(exc.message, exc.detail, exc.hint)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _print_error(message: str, detail: str, hint: str) -> None:
    lines = [f"error: {message}", *([f"  {detail}"] if detail else []), *([f"hint: {hint}"] if hint else [])]
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()
