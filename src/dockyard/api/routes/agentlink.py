"""The network agent link: an agent outside this host's unix sockets dials `/api/v2/agents/link`.

The WebSocket carries exactly the bytes an agent would write to its link socket (docs/AGENT_PROTOCOL.md), as
binary messages; the text message `{"type":"eof"}` stands for a half-close of the side that sent it. Before the
upgrade the hub derives the connection's origin from the agent token and the source address
(`AgentHub.network_origin`, docs/SECURITY.md "Agent identity"); after it, the hub serves the connection as it
serves one from a unix listener. A socket pair joins the two, so the hub's code does not know which transport
it runs on.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from dockyard import logs
from dockyard.api.deps import HubDep, client_ip
from dockyard.errors import Forbidden, Unauthorized
from dockyard.tunnel.hub import Refused

log = logs.get(__name__)

router = APIRouter(tags=["agent"])

LINK_PATH = "/api/v2/agents/link"
EOF_TEXT = '{"type":"eof"}'
CHUNK = 256 * 1024
# While only the agent still sends, how often to look whether the hub closed its side.
HANGUP_POLL = 0.5


def agent_token(websocket: WebSocket) -> str:
    scheme, _, value = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized(
            "An agent token is required.", detail="Send `Authorization: Bearer <agent token>`."
        )
    return value.strip()


@router.websocket(LINK_PATH)
async def agent_link(websocket: WebSocket, hub: HubDep) -> None:
    """An agent's control or stream connection over the network. Authenticated by its agent token, which must
    come from the workspace's own address where the runtime knows it; API tokens are not accepted."""
    token = agent_token(websocket)
    try:
        origin = await hub.network_origin(token, client_ip(websocket))
    except Refused as exc:
        # 403 tells the agent to back off for seconds, not to re-dial at once.
        raise Forbidden("This agent connection is refused.", detail=exc.reason) from None
    await websocket.accept()
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    try:
        reader, writer = await asyncio.open_connection(sock=theirs)
    except BaseException:
        ours.close()
        theirs.close()
        raise
    hub.serve(origin, reader, writer)
    try:
        await _pump(websocket, ours)
    finally:
        ours.close()
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await websocket.close()


def _hung_up(sock: socket.socket) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLHUP)
    return any(event & select.POLLHUP for _, event in poller.poll(0))


async def _pump(websocket: WebSocket, sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()

    async def to_hub() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data:
                await loop.sock_sendall(sock, data)
            elif message.get("text") == EOF_TEXT:
                sock.shutdown(socket.SHUT_WR)

    async def to_agent() -> None:
        while data := await loop.sock_recv(sock, CHUNK):
            await websocket.send_bytes(data)
        if _hung_up(sock):
            return
        # The hub half-closed (a dial's workspace-bound side ended): pass it on, and wait for the full close.
        await websocket.send_text(EOF_TEXT)
        while not _hung_up(sock):
            await asyncio.sleep(HANGUP_POLL)

    tasks = [asyncio.ensure_future(to_hub()), asyncio.ensure_future(to_agent())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, BaseException) and not isinstance(
                result, OSError | WebSocketDisconnect | RuntimeError | asyncio.CancelledError
            ):
                log.warning("agent link relay failed", error=repr(result))
