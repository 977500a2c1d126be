"""A stand-in control plane for the agent's tests.

The real agent file runs as a subprocess and dials a unix socket served here, which speaks the frame protocol of
docs/AGENT_PROTOCOL.md: it answers `hello` with `welcome` (or `reject`), records every control message, and pairs
the agent's `attach` connections with the `open` that asked for them. The real control plane is tested
elsewhere; this only has to be a faithful peer on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import struct
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

AGENT = Path(__file__).resolve().parents[2] / "src" / "dockyard" / "agent" / "agent.py"
# Run the agent on another interpreter (e.g. a python3.9) to check the oldest supported version.
AGENT_PYTHON = os.environ.get("DOCKYARD_AGENT_PYTHON", sys.executable)
TOKEN = "dya_ws1_secret"

JSON, STDIN, STDOUT, STDERR, EOF = 1, 2, 3, 4, 5
_HEADER = struct.Struct(">BI")
TIMEOUT = 10.0


class FrameConn:
    """The control plane's end of one connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def recv(self, timeout: float = TIMEOUT) -> tuple[int, bytes] | None:
        async def read() -> tuple[int, bytes] | None:
            try:
                kind, length = _HEADER.unpack(await self.reader.readexactly(_HEADER.size))
                return kind, await self.reader.readexactly(length)
            except (asyncio.IncompleteReadError, ConnectionError):
                return None

        return await asyncio.wait_for(read(), timeout)

    async def recv_json(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        frame = await self.recv(timeout)
        assert frame is not None, "connection closed"
        assert frame[0] == JSON, frame
        message = json.loads(frame[1])
        assert isinstance(message, dict)
        return message

    def send(self, kind: int, payload: bytes = b"") -> None:
        self.writer.write(_HEADER.pack(kind, len(payload)) + payload)

    def send_json(self, message: dict[str, Any]) -> None:
        self.send(JSON, json.dumps(message).encode())

    async def collect(self, timeout: float = TIMEOUT) -> Output:
        """Everything up to the `exit` frame (or the end of the connection)."""
        stdout, stderr = bytearray(), bytearray()
        messages: list[dict[str, Any]] = []
        exit_message = None
        while exit_message is None:
            frame = await self.recv(timeout)
            if frame is None:
                break
            kind, payload = frame
            if kind == STDOUT:
                stdout += payload
            elif kind == STDERR:
                stderr += payload
            elif kind == JSON:
                messages.append(json.loads(payload))
                if messages[-1].get("type") == "exit":
                    exit_message = messages[-1]
        return Output(bytes(stdout), bytes(stderr), exit_message, messages)

    async def read_until(self, needle: bytes, timeout: float = TIMEOUT) -> bytes:
        """STDOUT bytes up to and including the first frame that completes `needle`."""
        seen = b""
        while needle not in seen:
            frame = await self.recv(timeout)
            assert frame is not None, f"closed before {needle!r}; got {seen!r}"
            if frame[0] == STDOUT:
                seen += frame[1]
        return seen

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@dataclass
class Output:
    stdout: bytes = b""
    stderr: bytes = b""
    exit: dict[str, Any] | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)


class Control:
    """One control connection after the welcome: what the agent said on it, and a way to open streams."""

    def __init__(self, plane: FakePlane, conn: FrameConn, hello: dict[str, Any]) -> None:
        self.plane = plane
        self.conn = conn
        self.hello = hello
        self.messages: list[dict[str, Any]] = []
        self.closed = asyncio.Event()
        self._changed = asyncio.Event()

    async def serve(self) -> None:
        while True:
            try:
                frame = await self.conn.recv(timeout=3600)
            except ConnectionError:
                frame = None
            if frame is None:
                break
            if frame[0] == JSON:
                self.messages.append(json.loads(frame[1]))
                self._changed.set()
        self.closed.set()
        self._changed.set()

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = TIMEOUT
    ) -> dict[str, Any]:
        async def scan() -> dict[str, Any]:
            while True:
                self._changed.clear()
                for message in self.messages:
                    if predicate(message):
                        return message
                if self.closed.is_set():
                    raise AssertionError(f"control connection closed; messages: {self.messages}")
                await self._changed.wait()

        return await asyncio.wait_for(scan(), timeout)

    async def wait_state(self, state: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        return await self.wait_for(lambda m: m["type"] == "lifecycle" and m["state"] == state, timeout)

    def states(self) -> list[str]:
        return [m["state"] for m in self.messages if m["type"] == "lifecycle"]

    def lifecycle(self) -> list[tuple[str, int | None]]:
        return [(m["state"], m["exit_code"]) for m in self.messages if m["type"] == "lifecycle"]

    def log_lines(self, source: str) -> list[str]:
        return [
            line for m in self.messages if m["type"] == "log" and m["source"] == source for line in m["lines"]
        ]

    def send_json(self, message: dict[str, Any]) -> None:
        self.conn.send_json(message)

    async def open(self, kind: str, **fields: Any) -> FrameConn:
        """Ask the agent for a stream and return the control plane's end of it once the agent attached."""
        stream = uuid.uuid4().hex
        attached = self.plane.expect_attach(stream)
        self.send_json({"type": "open", "stream": stream, "kind": kind, **fields})
        return await asyncio.wait_for(attached, TIMEOUT)

    async def sh(self, command: str, **fields: Any) -> FrameConn:
        """An `exec` stream running `command` with `sh -c`."""
        return await self.open("exec", **{"shell": command}, **fields)

    async def close(self) -> None:
        await self.conn.close()


class FakePlane:
    def __init__(self, path: str, *, token: str = TOKEN, welcome: dict[str, Any] | None = None) -> None:
        self.path = path
        self.token = token
        self.welcome: dict[str, Any] = {
            "type": "welcome",
            "workspace_id": "ws1",
            "startup_script": "",
            "startup_timeout": 600,
            "shutdown_script": "",
            "heartbeat": 15,
            "stats_interval": 15,
            **(welcome or {}),
        }
        self.hellos: list[dict[str, Any]] = []
        # False: hang up on every hello (a control plane that is restarting), so the agent backs off.
        self.accepting = True
        self.attaches: list[dict[str, Any]] = []
        self._controls: asyncio.Queue[Control] = asyncio.Queue()
        self._attached: dict[str, asyncio.Future[FrameConn]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.AbstractServer | None = None
        self.listening_at: float | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._accept, self.path)
        self.listening_at = asyncio.get_running_loop().time()

    def start_later(self, delay: float) -> None:
        async def later() -> None:
            await asyncio.sleep(delay)
            await self.start()

        task = asyncio.ensure_future(later())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()

    def expect_attach(self, stream: str) -> asyncio.Future[FrameConn]:
        return self._attached.setdefault(stream, asyncio.get_running_loop().create_future())

    async def control(self, timeout: float = TIMEOUT) -> Control:
        """The next control connection the agent completes (hello answered with welcome)."""
        return await asyncio.wait_for(self._controls.get(), timeout)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = FrameConn(reader, writer)
        first = await conn.recv_json()
        if first["type"] == "attach":
            self.attaches.append(first)
            assert first["token"] == self.token
            self.expect_attach(first["stream"]).set_result(conn)
            return
        assert first["type"] == "hello", first
        self.hellos.append(first)
        if not self.accepting:
            await conn.close()
            return
        if first["token"] != self.token:
            conn.send_json({"type": "reject", "error": "invalid agent token"})
            await conn.close()
            return
        conn.send_json(self.welcome)
        control = Control(self, conn, first)
        await self._controls.put(control)
        # Serve in the handler's own task, so the connection lives as long as the agent keeps it.
        await control.serve()


class AgentEnv:
    """A fake control plane and the real agent file running against it, in a temporary home."""

    def __init__(self, tmp_path: Path) -> None:
        self.home = tmp_path / "home"
        self.home.mkdir()
        self.stderr_path = tmp_path / "agent.stderr"
        # Unix socket paths are limited to 108 bytes; pytest's tmp_path can be longer.
        self.socket_dir = tempfile.mkdtemp(prefix="dya-")
        self.plane: FakePlane | None = None
        self.process: asyncio.subprocess.Process | None = None
        # Set by a test that makes the agent fail on purpose, so the fixture accepts tracebacks in its stderr.
        self.expect_errors = False

    async def start(
        self,
        *,
        token: str = TOKEN,
        token_file: str | None = None,
        wrapper: str | None = None,
        listen_after: float = 0.0,
        **welcome: Any,
    ) -> FakePlane:
        """Start the plane and the agent; `wrapper` is Python code run instead, with the agent's path as argv[1].
        With `token_file` the agent reads its token from that file (as in a workspace) instead of `--token`.
        With `listen_after` the plane's socket appears only that many seconds after the agent started."""
        self.plane = FakePlane(os.path.join(self.socket_dir, "agent.sock"), welcome=welcome)
        if listen_after > 0:
            self.plane.start_later(listen_after)
        else:
            await self.plane.start()
        # TMPDIR: the agent's task socket folder is removed with the test's, even after a SIGKILL.
        env = {
            **os.environ,
            "HOME": str(self.home),
            "DOCKYARD_WORKSPACE_NAME": "dev",
            "TMPDIR": self.socket_dir,
        }
        env.pop("DOCKYARD_AGENT_TOKEN", None)
        with self.stderr_path.open("wb") as stderr:
            self.process = await asyncio.create_subprocess_exec(
                AGENT_PYTHON,
                *(["-c", wrapper] if wrapper else []),
                str(AGENT),
                "--socket",
                self.plane.path,
                *(["--token-file", token_file] if token_file else ["--token", token]),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                env=env,
                cwd=str(self.home),
            )
        return self.plane

    async def connect(self, **welcome: Any) -> Control:
        """Start everything and return the agent's first control connection."""
        plane = await self.start(**welcome)
        return await plane.control()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = TIMEOUT) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(sig)
        return await asyncio.wait_for(self.process.wait(), timeout)

    async def close(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        if self.plane is not None:
            await self.plane.stop()
        shutil.rmtree(self.socket_dir, ignore_errors=True)
