"""SSH channels carried to the workspace's agent: sessions (shell, exec, sftp) as `exec` streams and
local port forwards as `dial` streams (docs/AGENT_PROTOCOL.md).

Both sides are callback-driven and push bytes without an await per chunk; back-pressure pauses the side that
produces faster than the other consumes (asyncssh's pause_reading on the SSH side, the stream transport's
buffer on the agent side), so throughput is bounded by the slower side, not by Python round trips.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import asyncssh

from dockyard.tunnel import frames
from dockyard.tunnel.frames import FrameStream, ProtocolError

# Pause the SSH side when this much is waiting to go to the agent.
AGENT_HIGH_WATER = 1 << 20
MAX_ENV_VARS = 64
MAX_ENV_VALUE = 8192
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# sshd runs commands with the user's login shell from the password database; so do we (with fallbacks for
# images without getent).
_LOGIN_SHELL = (
    's=$(getent passwd "$(id -u)" 2>/dev/null | cut -d: -f7); export SHELL="${s:-${SHELL:-/bin/sh}}"; '
)
SHELL_ARGV = ["/bin/sh", "-c", _LOGIN_SHELL + 'exec "$SHELL" -l']
_SFTP_SERVER = (
    "for p in /usr/lib/openssh/sftp-server /usr/libexec/openssh/sftp-server /usr/lib/ssh/sftp-server "
    '/usr/libexec/sftp-server /usr/lib/sftp-server; do [ -x "$p" ] && exec "$p"; done; '
    'echo "dockyard: this workspace has no sftp-server (install openssh-sftp-server)" >&2; exit 127'
)
SFTP_ARGV = ["/bin/sh", "-c", _SFTP_SERVER]


def command_argv(command: str) -> list[str]:
    return ["/bin/sh", "-c", _LOGIN_SHELL + 'exec "$SHELL" -c "$1"', "sh", command]


class SessionRefused(Exception):
    """The client may not (or cannot now) use the workspace; the message is for the client's stderr."""


class Link(Protocol):
    """What a channel needs from its SSH connection."""

    async def open_stream(
        self, kind: str, progress: Callable[[str], None] | None, **params: Any
    ) -> FrameStream:
        """Check the credential, resolve and start the workspace, and open an agent stream; raises
        SessionRefused."""

    def activity(self) -> None:
        """Bytes moved: the workspace is in use."""

    def refused(self) -> None:
        """A session was refused: the connection has nothing else to offer and closes."""

    def environment(self) -> dict[str, str]:
        """Variables sshd would set (SSH_CONNECTION …)."""


def client_environment(given: dict[str, str]) -> dict[str, str]:
    """The variables a client sent (`SendEnv`/`SetEnv`), bounded in number and size."""
    accepted: dict[str, str] = {}
    for name, value in given.items():
        if len(accepted) >= MAX_ENV_VARS:
            break
        if _ENV_NAME.match(name) and len(value) <= MAX_ENV_VALUE and "\0" not in value:
            accepted[name] = value
    return accepted


class _AgentWriter:
    """Writes client bytes to an agent stream; pauses the SSH channel while the stream's buffer is full."""

    def __init__(self, stream: FrameStream, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        self._stream = stream
        self._pause = pause
        self._resume = resume
        self._draining: asyncio.Task[None] | None = None

    def write(self, kind: int | None, data: bytes) -> None:
        if kind is None:
            self._stream.writer.write(data)
        else:
            self._stream.write_nowait(kind, data)
        transport = self._stream.writer.transport
        if self._draining is None and transport.get_write_buffer_size() > AGENT_HIGH_WATER:
            self._pause()
            self._draining = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        try:
            await self._stream.writer.drain()
        except (ConnectionError, OSError):
            return
        finally:
            self._draining = None
        self._resume()

    def cancel(self) -> None:
        if self._draining is not None:
            self._draining.cancel()


class WorkspaceSession(asyncssh.SSHServerSession[bytes]):
    """One SSH session channel: an interactive shell (with or without a PTY), a command, or SFTP."""

    def __init__(self, link: Link) -> None:
        self._link = link
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None
        self._command: str | None = None
        self._subsystem: str | None = None
        self._pty = False
        self._stream: FrameStream | None = None
        self._writer: _AgentWriter | None = None
        self._early: list[bytes] = []
        self._early_eof = False
        self._refused = False
        self._writable = asyncio.Event()
        self._writable.set()
        self._task: asyncio.Task[None] | None = None

    # --- requests before the session starts ------------------------------------------------------------------

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan

    def pty_requested(self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Any) -> bool:
        self._pty = True
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        self._command = command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem != "sftp":
            return False
        self._subsystem = subsystem
        return True

    def session_started(self) -> None:
        assert self._chan is not None
        self._task = asyncio.ensure_future(self._run(self._chan))

    # --- the running session ---------------------------------------------------------------------------------

    def _params(self, chan: asyncssh.SSHServerChannel[bytes]) -> dict[str, Any]:
        if self._subsystem is not None:
            argv = SFTP_ARGV
        elif self._command is not None:
            argv = command_argv(self._command)
        else:
            argv = SHELL_ARGV
        env = {**client_environment(dict(chan.get_environment())), **self._link.environment()}
        params: dict[str, Any] = {"argv": argv, "env": env}
        if self._pty:
            term = chan.get_terminal_type() or "xterm"
            width, height, _, _ = chan.get_terminal_size()
            env["TERM"] = term
            params["pty"] = {"term": term, "width": width or 80, "height": height or 24}
        return params

    def _message(self, text: str) -> None:
        """One line for the client's stderr; with a PTY the client's terminal is raw and needs the \\r."""
        if self._chan is not None and not self._chan.is_closing():
            self._chan.write_stderr(f"dockyard: {text}{chr(13) if self._pty else ''}\n".encode())

    async def _run(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        try:
            stream = await self._link.open_stream("exec", self._message, **self._params(chan))
        except SessionRefused as exc:
            self._message(str(exc))
            # The connection closes once this channel has (connection_lost): closing it now could reach the
            # client before the exit status, which ssh would then report as 255.
            self._refused = True
            chan.exit(1)
            return
        self._stream = stream
        self._writer = _AgentWriter(stream, chan.pause_reading, chan.resume_reading)
        for data in self._early:
            self._writer.write(frames.STDIN, data)
        if self._early_eof:
            self._writer.write(frames.EOF, b"")
        self._early.clear()
        chan.resume_reading()
        try:
            await self._pump(chan, stream)
        except (EOFError, ConnectionError, ProtocolError, ValueError):
            self._message("the workspace's agent ended the session")
            chan.exit(255)
        finally:
            await stream.close()

    async def _pump(self, chan: asyncssh.SSHServerChannel[bytes], stream: FrameStream) -> None:
        """Agent output to the channel, until the process's exit (passed on as SSH exit status or signal)."""
        while True:
            if not self._writable.is_set():
                await self._writable.wait()
            kind, payload = await stream.read()
            if kind == frames.STDOUT:
                chan.write(payload)
                self._link.activity()
            elif kind == frames.STDERR:
                chan.write_stderr(payload)
                self._link.activity()
            elif kind == frames.JSON:
                message = json.loads(payload)
                if message.get("type") != "exit":
                    continue
                chan.write_eof()
                signal = message.get("signal")
                if signal:
                    chan.exit_with_signal(str(signal))
                else:
                    code = message.get("exit_code")
                    chan.exit(code if isinstance(code, int) else 255)
                return

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self._writer is not None:
            self._writer.write(frames.STDIN, data)
            self._link.activity()
        elif self._chan is not None:
            # Input that came with the request, before the agent stream exists: keep this chunk, and leave
            # the rest in asyncssh's window (asyncssh resumes reading itself right after session_started).
            self._early.append(data)
            self._chan.pause_reading()

    def eof_received(self) -> bool:
        if self._writer is not None:
            self._writer.write(frames.EOF, b"")
        else:
            self._early_eof = True
        # Half-open: the process may keep writing after its input ended.
        return True

    def _control(self, message: dict[str, Any]) -> None:
        if self._stream is not None and not self._stream.writer.is_closing():
            self._stream.write_nowait(frames.JSON, json.dumps(message).encode())

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        if width and height:
            self._control({"type": "resize", "width": width, "height": height})

    def signal_received(self, signal: str) -> None:
        self._control({"type": "signal", "signal": signal.removeprefix("SIG")[:16]})

    def break_received(self, msec: int) -> bool:
        # A serial-line BREAK has no meaning here; like sshd with a PTY, it interrupts.
        self._control({"type": "signal", "signal": "INT"})
        return True

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            self._link.refused()
        # The client went away: closing the stream makes the agent kill the process group.
        if self._writer is not None:
            self._writer.cancel()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        elif self._stream is not None:
            _spawn(self._stream.close())


class ForwardSession(asyncssh.SSHTCPSession[bytes]):
    """One `ssh -L` connection: raw bytes to and from a `dial` stream the agent already connected. Each
    direction's end (half-close) is passed on; the channel closes once both directions ended."""

    def __init__(self, link: Link, stream: FrameStream) -> None:
        self._link = link
        self._stream = stream
        self._chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self._writer: _AgentWriter | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._task: asyncio.Task[None] | None = None
        self._client_done = False
        self._agent_done = False

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self._chan = chan
        self._writer = _AgentWriter(self._stream, chan.pause_reading, chan.resume_reading)

    def session_started(self) -> None:
        assert self._chan is not None
        self._task = asyncio.ensure_future(self._pump(self._chan))

    async def _pump(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        reader = self._stream.reader
        try:
            while True:
                if not self._writable.is_set():
                    await self._writable.wait()
                data = await reader.read(1 << 18)
                if not data:
                    break
                chan.write(data)
                self._link.activity()
        except (ConnectionError, OSError):
            chan.close()
            return
        self._agent_done = True
        if self._client_done:
            chan.close()
        else:
            chan.write_eof()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self._writer is not None:
            self._writer.write(None, data)
            self._link.activity()

    def eof_received(self) -> bool:
        self._client_done = True
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            if self._stream.writer.can_write_eof():
                self._stream.writer.write_eof()
        if self._agent_done and self._chan is not None:
            self._chan.close()
        # Otherwise half-open: the workspace side may still send.
        return True

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._writer is not None:
            self._writer.cancel()
        if self._task is not None:
            self._task.cancel()
        _spawn(self._stream.close())


_background: set[asyncio.Future[None]] = set()


def _spawn(coroutine: Coroutine[Any, Any, None]) -> None:
    """Fire and forget, but referenced: the loop keeps only weak references to tasks."""
    task = asyncio.ensure_future(coroutine)
    _background.add(task)
    task.add_done_callback(_background.discard)
