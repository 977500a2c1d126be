"""What runs in a warm pool member after a create claimed it: the owner's part of the start.

The container is not restarted and the agent keeps its control connection (a claim that looked like a
re-init to the agent would end every session in it). The hub sends the agent one `claim` message on that
connection: the owner's environment for everything it starts from then on (sessions already open keep
theirs), and the repository to clone with the owner's brokered credentials, after which the agent reports
`starting` then `ready` as at a first start. Dev container workspaces then run their post-create hooks
(tunnel/devcontainer.py), which the pool left for the owner.

Every create goes through `create_workspace` here (the API's and the dashboard's; MCP's tools call the API), so
no path claims a member without telling its agent. The agent may be held by another replica than the one that
took the create: the message then travels over the replicas' relay (`AgentHub.relay_message`, answered by
`/api/v2/replicas/relay/{id}` with kind `claim`), as exec streams do.
"""

from __future__ import annotations

from typing import Any

import anyio.from_thread
from sqlalchemy.orm import Session

from dockyard import logs as logging
from dockyard.accounts.actor import Actor
from dockyard.provisioner.idempotency_keys import Claim
from dockyard.runtimes.base import HostCapacity
from dockyard.tunnel.hub import AgentHub
from dockyard.workspaces import service as workspaces
from dockyard_sdk import models as wire

log = logging.get(__name__)

RELAY_KIND = "claim"


def create_workspace(
    db: Session,
    actor: Actor,
    body: wire.CreateWorkspaceRequest,
    *,
    hub: AgentHub,
    capacity: HostCapacity | None,
    idempotency: Claim | None = None,
) -> workspaces.Loaded:
    """Create a workspace; when it claimed a warm pool member, tell the member's agent before answering (a
    client that execs right after the create must find the owner's environment). Call from a worker thread."""
    loaded = workspaces.create(db, actor, body, capacity=capacity, idempotency=idempotency)
    if loaded.claim is not None:
        anyio.from_thread.run(after_claim, hub, loaded.workspace.id, loaded.claim)
    return loaded


async def after_claim(
    hub: AgentHub, workspace_id: str, message: dict[str, Any], *, relay: bool = True
) -> bool:
    """Tell the agent it was claimed, here or (with `relay`) through the replica holding it; False when no
    replica holds it (its owner's environment then applies from the workspace's next start)."""
    hooks = bool(message.get("hooks"))
    wire_message = {key: value for key, value in message.items() if key != "hooks"}
    if await hub.tell(workspace_id, wire_message):
        if hooks and not message.get("git") and hub.on_ready is not None:
            # Nothing for the agent to report first: the post-create hooks start now and mark it ready.
            await hub.on_ready(workspace_id)
        return True
    if relay and await hub.relay_message(workspace_id, RELAY_KIND, message):
        return True
    log.warning(
        "a claimed workspace's agent is not connected; its owner's part waits", workspace=workspace_id
    )
    return False
