"""Agent streams carried over a WebSocket to the process that holds the agent.

Used by `dockyard gateway` (RemoteHub, through `/api/v2/workspaces/{id}/agent/stream`) and by a replica relaying
a client's stream to the replica that holds the agent (`/api/v2/replicas/relay/{id}`). Binary messages carry the
stream's bytes verbatim; the text message `{"type":"eof"}` stands for a half-close of the side that sent it.
The caller gets a FrameStream over one end of a socket pair, so it cannot tell the stream from a local one.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from dockyard import logs
from dockyard.tunnel.frames import FrameStream

log = logs.get(__name__)

EOF_TEXT = '{"type":"eof"}'
CHUNK = 256 * 1024
OPEN_TIMEOUT = 20.0
# While only the agent's side of a stream still sends, how often to look whether the client closed it.
HANGUP_POLL = 1.0

Spawn = Callable[[Coroutine[Any, Any, None]], object]


class StreamRefused(Exception):
    """The far side answered the upgrade with an HTTP error (its JSON error body is kept)."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body


async def open_stream(url: str, *, token: str, user_agent: str, spawn: Spawn) -> FrameStream:
    """Open the WebSocket at `url` and hand back the stream; raises StreamRefused, or ConnectionError when the
    far side cannot be reached."""
    try:
        websocket = await connect(
            url,
            additional_headers={"Authorization": f"Bearer {token}"},
            user_agent_header=user_agent,
            # SSH traffic is encrypted or already compressed often enough; deflate would only cost CPU.
            compression=None,
            max_size=None,
            open_timeout=OPEN_TIMEOUT,
        )
    except InvalidStatus as exc:
        raise StreamRefused(exc.response.status_code, bytes(exc.response.body or b"")) from None
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        raise ConnectionError(str(exc) or type(exc).__name__) from None
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    try:
        reader, writer = await asyncio.open_connection(sock=theirs)
    except BaseException:
        ours.close()
        theirs.close()
        await websocket.close()
        raise
    spawn(_relay(websocket, ours))
    return FrameStream(reader, writer)


def _hung_up(sock: socket.socket) -> bool:
    """Whether both directions of the socket ended: the peer closed it, or we half-closed it after it did.
    (A read of b"" cannot tell a peer's close from its half-close; the kernel's hang-up flag can.)"""
    poller = select.poll()
    poller.register(sock, select.POLLHUP)
    return any(event & select.POLLHUP for _, event in poller.poll(0))


async def _relay(websocket: ClientConnection, sock: socket.socket) -> None:
    """Carry bytes between the WebSocket and our end of the stream's socket pair until either side ends."""
    loop = asyncio.get_running_loop()

    async def to_socket() -> None:
        async for message in websocket:
            if isinstance(message, bytes):
                await loop.sock_sendall(sock, message)
            elif message == EOF_TEXT:
                sock.shutdown(socket.SHUT_WR)

    async def to_websocket() -> None:
        while data := await loop.sock_recv(sock, CHUNK):
            await websocket.send(data)
        # The user of the stream closed it, or only shut it for writing (a dial's half-close): pass on which.
        if _hung_up(sock):
            return
        await websocket.send(EOF_TEXT)
        while not _hung_up(sock):
            await asyncio.sleep(HANGUP_POLL)

    tasks = [asyncio.ensure_future(to_socket()), asyncio.ensure_future(to_websocket())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(
                result, ConnectionClosed | OSError | asyncio.CancelledError
            ):
                log.warning("agent stream relay failed", error=repr(result))
        sock.close()
        with contextlib.suppress(Exception):
            await websocket.close()
