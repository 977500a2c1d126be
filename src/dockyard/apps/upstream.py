"""HTTP and WebSocket connections to a port inside a workspace, made through the agent's `dial` stream.

httpcore speaks HTTP/1.1 over a network backend whose `connect_tcp` asks the agent to dial the port; the
WebSocket client (websockets) gets one end of a socket pair whose other end is pumped through the dial stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import httpcore

from dockyard.errors import DockyardError
from dockyard.tunnel.connect import Hub
from dockyard.tunnel.frames import FrameStream

CHUNK = 256 * 1024


class AppUnreachable(DockyardError):
    """Nothing answered on the app's port in the workspace (yet): a 502 with the agent's reason."""

    status_code = 502


async def dial(hub: Hub, workspace_id: str, port: int) -> FrameStream:
    stream = await hub.open(workspace_id, "dial", host="127.0.0.1", port=port)
    try:
        answer = await stream.read_json()
    except (EOFError, ConnectionError) as exc:
        await stream.close()
        raise AppUnreachable(
            "App not reachable yet.", detail=f"port {port}: the agent closed the stream"
        ) from exc
    if answer.get("type") != "ok":
        await stream.close()
        reason = str(answer.get("error", "unknown error"))
        raise AppUnreachable(
            "App not reachable yet.",
            detail=f"port {port} in the workspace: {reason} (is the app started and listening on 127.0.0.1?)",
        )
    return stream


class _TunnelStream(httpcore.AsyncNetworkStream):
    def __init__(self, stream: FrameStream) -> None:
        self.stream = stream

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            return await asyncio.wait_for(self.stream.reader.read(max_bytes), timeout)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc)) from exc
        except ConnectionError as exc:
            raise httpcore.ReadError(str(exc)) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            self.stream.writer.write(buffer)
            await asyncio.wait_for(self.stream.writer.drain(), timeout)
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc)) from exc
        except ConnectionError as exc:
            raise httpcore.WriteError(str(exc)) from exc

    async def aclose(self) -> None:
        await self.stream.close()

    def get_extra_info(self, info: str) -> Any:
        return None


class TunnelBackend(httpcore.AsyncNetworkBackend):
    """Every "TCP connection" httpcore makes is a dial stream to `port` in one workspace."""

    def __init__(self, hub: Hub, workspace_id: str, port: int) -> None:
        self.hub = hub
        self.workspace_id = workspace_id
        self.port = port

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        return _TunnelStream(await dial(self.hub, self.workspace_id, self.port))

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.AsyncNetworkStream:  # pragma: no cover - never asked for
        raise httpcore.ConnectError("no unix sockets through the tunnel")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def pool(hub: Hub, workspace_id: str, port: int) -> httpcore.AsyncConnectionPool:
    return httpcore.AsyncConnectionPool(
        network_backend=TunnelBackend(hub, workspace_id, port), max_connections=4, keepalive_expiry=30.0
    )


async def socket_through(stream: FrameStream) -> tuple[socket.socket, asyncio.Task[None]]:
    """A local socket whose bytes travel the dial stream (for clients that need a real socket)."""
    mine, theirs = socket.socketpair()
    mine.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=mine)

    async def copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await source.read(CHUNK):
                sink.write(data)
                await sink.drain()
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            if sink.can_write_eof():
                sink.write_eof()

    async def pump() -> None:
        try:
            await asyncio.gather(copy(reader, stream.writer), copy(stream.reader, writer))
        finally:
            writer.close()
            await stream.close()

    return theirs, asyncio.ensure_future(pump())
