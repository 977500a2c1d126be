"""Carrying bytes between a client's WebSocket and an agent stream, for the exec, terminal and dial routes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from starlette.websockets import WebSocket, WebSocketDisconnect

from dockyard.tunnel import frames, state
from dockyard.tunnel.frames import FrameStream, ProtocolError

CHUNK = 256 * 1024
STDOUT_TAG = b"\x01"
STDERR_TAG = b"\x02"
# How a pump ends when its side goes away: not errors.
_ENDINGS = (WebSocketDisconnect, EOFError, ConnectionError, ProtocolError)


async def keep_active(sessions: sessionmaker[Session], workspace_id: str, reason: str) -> None:
    """Mark the workspace used now and every heartbeat while the session lasts (cancel to end): an open
    terminal, exec or forward counts as activity even while no byte moves."""
    while True:
        await asyncio.to_thread(state.touch, sessions, workspace_id, reason)
        await asyncio.sleep(state.ACTIVITY_HEARTBEAT)


async def run_until_first(*coroutines: Awaitable[Any]) -> None:
    """Run the pumps of one session; when one ends (a side closed), stop the others."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            error = None if task.cancelled() else task.exception()
            if error is not None and not isinstance(error, _ENDINGS):
                raise error
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def client_to_agent(websocket: WebSocket, stream: FrameStream, *, control: set[str]) -> None:
    """Binary messages are input; text messages are JSON control messages of the given types (resize,
    signal, eof); anything else is ignored rather than trusted."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes")
        if data is not None:
            if data:
                await stream.write(frames.STDIN, data)
            continue
        try:
            command = json.loads(message.get("text") or "{}")
        except ValueError:
            continue
        kind = command.get("type") if isinstance(command, dict) else None
        if kind not in control:
            continue
        if kind == "eof":
            await stream.write(frames.EOF)
        elif kind == "resize":
            await stream.send_json(
                {
                    "type": "resize",
                    "width": int(command.get("width", 80)),
                    "height": int(command.get("height", 24)),
                }
            )
        elif kind == "signal":
            await stream.send_json({"type": "signal", "signal": str(command.get("signal", "INT"))[:16]})


async def agent_to_client(
    websocket: WebSocket, stream: FrameStream, *, tagged: bool, on_exit: Callable[[dict[str, Any]], None]
) -> None:
    """Output to the client (tagged with 1/2 for stdout/stderr on exec), then the exit message."""
    while True:
        kind, payload = await stream.read()
        if kind == frames.STDOUT:
            await websocket.send_bytes(STDOUT_TAG + payload if tagged else payload)
        elif kind == frames.STDERR:
            await websocket.send_bytes(STDERR_TAG + payload if tagged else payload)
        elif kind == frames.JSON:
            message = json.loads(payload)
            if message.get("type") == "exit":
                on_exit(message)
                await websocket.send_text(json.dumps(message))
                return


async def raw_client_to_agent(
    websocket: WebSocket, writer: asyncio.StreamWriter, *, half_close: bool = False
) -> None:
    """Binary messages go to the agent as they are. A WebSocket has no half-close of its own: with
    `half_close`, a text `{"type": "eof"}` stands for one (as a TCP client's shutdown for writing)."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes")
        if data:
            writer.write(data)
            await writer.drain()
        elif half_close and message.get("text") and _is_eof(message["text"]) and writer.can_write_eof():
            # The answer may still come; this direction just has nothing more to say. Reading goes on, so the
            # client leaving is still noticed and ends the stream.
            writer.write_eof()


def _is_eof(text: str) -> bool:
    try:
        command = json.loads(text)
    except ValueError:
        return False
    return isinstance(command, dict) and command.get("type") == "eof"


async def raw_agent_to_client(websocket: WebSocket, reader: asyncio.StreamReader) -> None:
    while True:
        data = await reader.read(CHUNK)
        if not data:
            return
        await websocket.send_bytes(data)
