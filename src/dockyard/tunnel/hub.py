"""The control plane's end of the agent protocol (docs/AGENT_PROTOCOL.md).

Agents dial the hub's unix socket. The first connection of an agent is its control connection: the hub keeps it,
pings it, and records what the agent reports (lifecycle, startup-script output, stats). Every client that needs a
stream calls `open`, which asks the agent over the control connection to dial a new connection for that stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import py_compile
import secrets
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from dockyard import logs as logging
from dockyard.errors import Conflict
from dockyard.provisioner import events
from dockyard.tunnel import frames, state, tokens
from dockyard.tunnel.frames import FrameStream, ProtocolError

log = logging.get(__name__)

# Unix socket paths are limited to 108 bytes by the kernel.
MAX_SOCKET_PATH = 107
HELLO_TIMEOUT = 10.0


# How a workspace runs the agent (the folder is mounted read-only at /run/dockyard): as a module, so that Python
# loads the bytecode compiled here instead of compiling 1,700 lines at every start (~9 ms of CPU, which adds up
# when many workspaces start at once; a script named on the command line is never loaded from bytecode). `-I`
# keeps the user's home (the working directory) and PYTHON* variables out of the agent's imports. The path stays
# the last argument so that the process is still found as `.../agent.py`.
LAUNCHER = (
    "import runpy, sys; sys.path.insert(0, sys.argv.pop(1).rpartition('/')[0]); "
    "runpy.run_module('agent', run_name='__main__', alter_sys=True)"
)


def agent_command(path: str) -> list[str]:
    return ["python3", "-I", "-c", LAUNCHER, path]


def install_agent(agent_dir: Path) -> Path:
    """Put this version's agent script where workspaces find it; running agents keep the copy they read.

    Its bytecode goes next to it, for workspaces whose Python is this server's version; hash-checked, so a
    stale or foreign file is ignored, and any other Python compiles the source as before.
    """
    agent_dir.mkdir(parents=True, exist_ok=True)
    source = resources.files("dockyard.agent").joinpath("agent.py").read_bytes()
    target = agent_dir / "agent.py"
    if not target.exists() or target.read_bytes() != source:
        staging = agent_dir / f".agent.py.{os.getpid()}"
        staging.write_bytes(source)
        staging.chmod(0o644)
        staging.replace(target)
    bytecode = Path(importlib.util.cache_from_source(str(target)))
    staging = bytecode.with_name(f".{bytecode.name}.{os.getpid()}")
    py_compile.compile(
        str(target),
        cfile=str(staging),
        doraise=True,
        invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
    )
    bytecode.parent.chmod(0o755)
    staging.chmod(0o644)
    staging.replace(bytecode)
    return target


class AgentUnavailable(Conflict):
    """The workspace's agent has no live connection to this server."""


@dataclass
class AgentSession:
    workspace_id: str
    stream: FrameStream
    version: str
    connected_at: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    lifecycle: str = "created"
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, message: dict[str, Any]) -> None:
        async with self.send_lock:
            await self.stream.send_json(message)


class AgentHub:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        socket_path: Path,
        *,
        heartbeat: float = 15.0,
        stats_interval: float = 15.0,
        open_timeout: float = 10.0,
    ) -> None:
        if len(str(socket_path)) > MAX_SOCKET_PATH:
            raise ValueError(
                f"the agent socket path {socket_path} is longer than {MAX_SOCKET_PATH} bytes; "
                "choose a shorter --data-dir"
            )
        self.sessions = sessions
        self.socket_path = socket_path
        self.heartbeat = heartbeat
        self.stats_interval = stats_interval
        self.open_timeout = open_timeout
        self._agents: dict[str, AgentSession] = {}
        self._pending: dict[str, tuple[str, asyncio.Future[FrameStream]]] = {}
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._key: bytes = b""

    # --- serving ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._key = await asyncio.to_thread(self._load_key)
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        # The folder is mounted into every workspace, where the agent runs as an unprivileged user.
        os.chmod(self.socket_path.parent, 0o755)  # noqa: S103 - read by workspace users
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._server = await asyncio.start_unix_server(self._accept, path=str(self.socket_path))
        # Any local user may connect; only a valid agent token gets anything back.
        os.chmod(self.socket_path, 0o666)  # noqa: S103
        self._spawn(self._ping_loop())
        log.info("agent hub listening", socket=str(self.socket_path))

    def _load_key(self) -> bytes:
        with self.sessions() as db:
            return tokens.load_key(db)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for session in list(self._agents.values()):
            await session.stream.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def token_for(self, workspace_id: str) -> str:
        return tokens.issue(self._key, workspace_id)

    def connected(self, workspace_id: str) -> bool:
        return workspace_id in self._agents

    # --- opening streams -------------------------------------------------------------------------------------

    async def open(self, workspace_id: str, kind: str, **params: Any) -> FrameStream:
        """Ask the workspace's agent for a stream of `kind`; returns the agent's connection for it."""
        session = self._agents.get(workspace_id)
        if session is None:
            raise AgentUnavailable(
                "The workspace's agent is not connected.",
                detail="It connects a moment after the workspace starts; wait for the workspace to be ready.",
            )
        stream_id = secrets.token_urlsafe(18)
        future: asyncio.Future[FrameStream] = asyncio.get_running_loop().create_future()
        self._pending[stream_id] = (workspace_id, future)
        try:
            await session.send({"type": "open", "stream": stream_id, "kind": kind, **params})
            return await asyncio.wait_for(future, self.open_timeout)
        except (TimeoutError, ConnectionError, EOFError) as exc:
            raise AgentUnavailable(
                "The workspace's agent did not answer.",
                detail=f"No {kind} stream within {self.open_timeout} s.",
            ) from exc
        finally:
            self._pending.pop(stream_id, None)

    # --- connections from agents -----------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream = FrameStream(reader, writer)
        try:
            first = await asyncio.wait_for(stream.read_json(), HELLO_TIMEOUT)
            kind = first.get("type")
            if kind == "hello":
                await self._control(stream, first)
            elif kind == "attach":
                await self._attach(stream, first)
            else:
                raise ProtocolError(f"unexpected first message {kind!r}")
        except (TimeoutError, EOFError, ConnectionError, ProtocolError, ValueError) as exc:
            log.info("agent connection refused or ended", error=str(exc) or exc.__class__.__name__)
            await stream.close()

    def _workspace_of(self, message: dict[str, Any]) -> str | None:
        token = message.get("token")
        return tokens.verify(self._key, token) if isinstance(token, str) else None

    async def _attach(self, stream: FrameStream, message: dict[str, Any]) -> None:
        stream_id = str(message.get("stream", ""))
        pending = self._pending.get(stream_id)
        workspace_id = self._workspace_of(message)
        # A stream id is only good for the agent it was sent to: another workspace's agent cannot take it.
        if pending is None or workspace_id != pending[0] or pending[1].done():
            raise ProtocolError("attach to an unknown stream")
        pending[1].set_result(stream)

    async def _control(self, stream: FrameStream, hello: dict[str, Any]) -> None:
        workspace_id = self._workspace_of(hello)
        welcome = (
            await asyncio.to_thread(state.welcome, self.sessions, workspace_id) if workspace_id else None
        )
        if workspace_id is None or welcome is None:
            await stream.send_json({"type": "reject", "error": "unknown or revoked agent token"})
            await stream.close()
            return
        version = str(hello.get("version", ""))[:32]
        session = AgentSession(workspace_id, stream, version)
        previous = self._agents.get(workspace_id)
        self._agents[workspace_id] = session
        if previous is not None:
            # A re-dial that beat the old connection's timeout: the newest connection is the live one.
            await previous.stream.close()
        await session.send(
            {
                "type": "welcome",
                "workspace_id": workspace_id,
                **welcome,
                "heartbeat": self.heartbeat,
                "stats_interval": self.stats_interval,
            }
        )
        await asyncio.to_thread(state.connected, self.sessions, workspace_id, version)
        events.changed(self.sessions, workspace_id)
        log.info("agent connected", workspace=workspace_id, version=version)
        try:
            while True:
                kind, payload = await stream.read()
                session.last_seen = time.monotonic()
                if kind == frames.JSON:
                    await self._report(session, json.loads(payload))
        except (EOFError, ConnectionError):
            pass
        except (ProtocolError, ValueError) as exc:
            log.warning("agent sent a bad message", workspace=workspace_id, error=str(exc))
        finally:
            await stream.close()
            if self._agents.get(workspace_id) is session:
                del self._agents[workspace_id]
                await asyncio.to_thread(state.disconnected, self.sessions, workspace_id)
                events.changed(self.sessions, workspace_id)
                log.info("agent disconnected", workspace=workspace_id)

    async def _report(self, session: AgentSession, message: dict[str, Any]) -> None:
        kind = message.get("type")
        workspace_id = session.workspace_id
        if kind == "lifecycle":
            lifecycle = str(message.get("state", ""))
            exit_code = message.get("exit_code")
            session.lifecycle = lifecycle
            await asyncio.to_thread(
                state.lifecycle,
                self.sessions,
                workspace_id,
                lifecycle,
                exit_code if isinstance(exit_code, int) else None,
            )
            events.changed(self.sessions, workspace_id)
        elif kind == "log":
            lines = message.get("lines")
            if isinstance(lines, list) and lines:
                source = str(message.get("source", "agent"))[:32]
                await asyncio.to_thread(
                    state.append_log, self.sessions, workspace_id, source, [str(line) for line in lines]
                )
        elif kind == "stats":
            await asyncio.to_thread(state.stats, self.sessions, workspace_id, message)

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            now = time.monotonic()
            for session in list(self._agents.values()):
                if now - session.last_seen > 2 * self.heartbeat + 1:
                    log.warning("agent stopped answering", workspace=session.workspace_id)
                    await session.stream.close()
                    continue
                try:
                    await asyncio.wait_for(session.send({"type": "ping"}), self.heartbeat)
                except (TimeoutError, ConnectionError, OSError):
                    await session.stream.close()
