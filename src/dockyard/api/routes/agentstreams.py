"""Agent streams for an SSH gateway in another process (`dockyard gateway`, `tunnel/remote.py`).

Agents connect to the server's unix socket, so only the server process can ask them for streams. This route
opens one for a deployment admin's token and carries its bytes verbatim as binary WebSocket messages; the text
message `{"type": "eof"}` stands, in either direction, for a half-close of the side that sent it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, WebSocket
from starlette.websockets import WebSocketDisconnect

from dockyard.accounts.actor import Actor
from dockyard.api.deps import DbSession, HubDep, WorkspaceParam, scoped
from dockyard.errors import Unauthorized, Validation, ValidationFailed
from dockyard.tunnel import bridge, claims
from dockyard.tunnel.frames import FrameStream
from dockyard.tunnel.hub import AgentHub
from dockyard_sdk.models import Scope

router = APIRouter(tags=["agent"])

KINDS = frozenset({"exec", "pty", "dial", "file_read", "file_write", "file_delete", "file_list", "file_stat"})
EOF_TEXT = '{"type":"eof"}'
# Keys of the agent's `open` message that the hub sets itself.
_RESERVED = frozenset({"type", "stream", "kind", "token"})


def _params(kind: str, params: str) -> dict[str, Any]:
    if kind not in KINDS:
        raise ValidationFailed(
            "Invalid request.", [Validation("kind", f"must be one of {', '.join(sorted(KINDS))}")]
        )
    try:
        values = json.loads(params)
    except ValueError:
        values = None
    if not isinstance(values, dict) or _RESERVED & values.keys():
        raise ValidationFailed(
            "Invalid request.",
            [Validation("params", f"must be a JSON object without {', '.join(sorted(_RESERVED))}")],
        )
    return values


@router.websocket("/api/v2/workspaces/{workspace}/agent/stream")
async def agent_stream(
    websocket: WebSocket,
    # Before the workspace: a token without the scope learns nothing about which workspaces exist.
    actor: Annotated[Actor, scoped(Scope.DEPLOYMENT_ADMIN)],
    db: DbSession,
    workspace: WorkspaceParam,
    hub: HubDep,
    kind: Annotated[str, Query(max_length=32, description="exec, pty, dial or file_*.")],
    params: Annotated[
        str, Query(max_length=65536, description="The `open` message's other fields, as a JSON object.")
    ] = "{}",
) -> None:
    """A raw agent stream of `kind` (docs/AGENT_PROTOCOL.md), for the SSH gateway run as its own process. It
    does not check that the workspace runs or mark it used: the gateway does both through the database."""
    values = _params(kind, params)
    workspace_id = workspace.id
    # A stream can last hours; it must not hold a pooled database connection all that time.
    db.close()
    # Opened before the upgrade, so an agent that is not connected is refused with the usual JSON error.
    stream = await hub.open(workspace_id, kind, **values)
    await _carry(websocket, stream)


@router.websocket("/api/v2/replicas/relay/{workspace_id}")
async def relay_stream(
    websocket: WebSocket,
    workspace_id: str,
    hub: HubDep,
    kind: Annotated[str, Query(max_length=32, description="exec, pty, dial or file_*.")],
    params: Annotated[
        str, Query(max_length=65536, description="The `open` message's other fields, as a JSON object.")
    ] = "{}",
) -> None:
    """A stream of an agent this replica holds, for another replica that a client reached (tunnel/replicas.py).
    Only a relay token signed with the deployment's replica key for this workspace is accepted: the client's
    own authorization, the workspace's status and its use were checked by the replica the client reached."""
    scheme, _, token = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or hub.verify_relay(token.strip(), workspace_id) is None:
        raise Unauthorized("A valid relay token is required.", detail="Only replicas relay agent streams.")
    if kind == claims.RELAY_KIND:
        await _claim(websocket, hub, workspace_id, params)
        return
    values = _params(kind, params)
    # Never relayed onwards: the agent is here, or the requester's view of who holds it was stale (409).
    stream = await hub.open_local(workspace_id, kind, **values)
    await _carry(websocket, stream)


async def _claim(websocket: WebSocket, hub: AgentHub, workspace_id: str, params: str) -> None:
    """A warm pool claim taken by another replica, for an agent held here: one byte back, 1 when told."""
    try:
        message = json.loads(params)["message"]
    except (ValueError, KeyError, TypeError):
        message = None
    if not isinstance(message, dict):
        raise ValidationFailed("Invalid request.", [Validation("params", "must hold the claim message")])
    # Not relayed onwards, as streams are not.
    told = await claims.after_claim(hub, workspace_id, message, relay=False)
    await websocket.accept()
    await websocket.send_bytes(b"1" if told else b"0")
    await websocket.close()


async def _carry(websocket: WebSocket, stream: FrameStream) -> None:
    try:
        await websocket.accept()
        ended = _Ended()
        await bridge.run_until_first(
            _client_to_agent(websocket, stream.writer, ended),
            _agent_to_client(websocket, stream.reader, ended),
        )
    finally:
        await stream.close()
    # The client may have closed first.
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await websocket.close()


class _Ended:
    """Which directions have half-closed: the stream is over once both have."""

    def __init__(self) -> None:
        self.client = False
        self.agent = False


async def _client_to_agent(websocket: WebSocket, writer: asyncio.StreamWriter, ended: _Ended) -> None:
    # Not bridge.raw_client_to_agent: here the stream also ends once both directions have half-closed, which
    # the gateway on the other side relies on to finish a channel without a full close.
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes")
        if data:
            writer.write(data)
            await writer.drain()
        elif message.get("text") == EOF_TEXT and not ended.client:
            ended.client = True
            if writer.can_write_eof():
                writer.write_eof()
            if ended.agent:
                return


async def _agent_to_client(websocket: WebSocket, reader: asyncio.StreamReader, ended: _Ended) -> None:
    await bridge.raw_agent_to_client(websocket, reader)
    await websocket.send_text(EOF_TEXT)
    ended.agent = True
    if ended.client:
        return
    # The client may still send (a dial's workspace side finished first); it ends the stream when done.
    await asyncio.Event().wait()
