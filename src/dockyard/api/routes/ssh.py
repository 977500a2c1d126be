"""SSH: users' public keys, user certificates, how to reach the gateway, and SSH over a WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Annotated

from fastapi import APIRouter, Depends, Path, WebSocket, status
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocketDisconnect

from dockyard.accounts import sshkeys
from dockyard.accounts.actor import Actor
from dockyard.api.deps import AUTHENTICATED, DbSession, UserParam, WorkspaceParam, client_ip, scoped
from dockyard.gateway import ca, keys
from dockyard.gateway.server import Gateway
from dockyard.tunnel import bridge
from dockyard_sdk import models as wire
from dockyard_sdk.models import Scope

router = APIRouter(tags=["ssh"])

# After one side ended, how long the SSH connection may take to notice and finish.
CLOSE_GRACE = 5.0


def _gateway(connection: HTTPConnection) -> Gateway:
    return connection.app.state.gateway  # type: ignore[no-any-return]


GatewayDep = Annotated[Gateway, Depends(_gateway)]
KeyRef = Annotated[str, Path(description="SSH key id or name.", max_length=128)]


@router.get("/api/v2/users/{user}/sshkeys")
def list_ssh_keys(
    user: UserParam, db: DbSession, actor: Annotated[Actor, scoped(Scope.USER_READ)]
) -> list[wire.SshKey]:
    """The user's registered SSH public keys, oldest first."""
    return [sshkeys.to_wire(row) for row in sshkeys.list_keys(db, actor, user)]


@router.post("/api/v2/users/{user}/sshkeys", status_code=status.HTTP_201_CREATED)
def add_ssh_key(
    body: wire.CreateSshKeyRequest,
    user: UserParam,
    db: DbSession,
    actor: Annotated[Actor, scoped(Scope.USER_WRITE)],
) -> wire.SshKey:
    """Register a public key; the SSH gateway then accepts it for this user."""
    return sshkeys.to_wire(keys.add(db, actor, user, body))


@router.delete("/api/v2/users/{user}/sshkeys/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
def remove_ssh_key(
    user: UserParam, key_id: KeyRef, db: DbSession, actor: Annotated[Actor, scoped(Scope.USER_WRITE)]
) -> None:
    """Unregister a key: new SSH sessions with it are refused at once, also on connections already open."""
    sshkeys.remove(db, actor, user, key_id)


@router.post("/api/v2/users/{user}/sshcert")
def create_ssh_certificate(
    body: wire.SshCertificateRequest,
    user: UserParam,
    db: DbSession,
    actor: Annotated[Actor, scoped(Scope.WORKSPACE_CONNECT)],
    gateway: GatewayDep,
) -> wire.SshCertificate:
    """A short-lived user certificate for your own public key. It dies with the token that asked for it."""
    return ca.issue_certificate(db, actor, user, body, gateway.authority)


@router.get("/api/v2/deployment/ssh")
def ssh_gateway(actor: Annotated[Actor, AUTHENTICATED], gateway: GatewayDep) -> wire.SshGateway:
    """Where the SSH gateway listens and the CA that certifies it (for known_hosts)."""
    return gateway.info()


@router.websocket("/api/v2/workspaces/{workspace}/ssh")
async def ssh_over_websocket(
    websocket: WebSocket,
    db: DbSession,
    workspace: WorkspaceParam,
    actor: Annotated[Actor, scoped(Scope.WORKSPACE_CONNECT)],
    gateway: GatewayDep,
) -> None:
    """An SSH connection to this workspace's gateway as binary WebSocket messages (`dockyard ssh --stdio`,
    for a ProxyCommand). The client still authenticates inside SSH with its key or certificate."""
    workspace_id = workspace.id
    # The connection can last hours; it must not hold a pooled database connection all that time.
    db.close()
    await websocket.accept()
    ours, theirs = socket.socketpair()
    serving = asyncio.ensure_future(
        gateway.serve_socket(theirs, workspace_id=workspace_id, source=client_ip(websocket))
    )
    reader, writer = await asyncio.open_connection(sock=ours)

    try:
        await bridge.run_until_first(
            bridge.raw_client_to_agent(websocket, writer),
            bridge.raw_agent_to_client(websocket, reader),
            # Shielded: when a pump ends first, the connection gets the grace below to close cleanly.
            asyncio.shield(serving),
        )
    finally:
        # Closing our end ends the SSH connection (its sessions close their agent streams). The gateway lets
        # go of its end itself: the event loop may have closed it already.
        writer.close()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(serving, CLOSE_GRACE)
    # The client may have closed first.
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await websocket.close()
