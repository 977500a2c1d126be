"""What runs in a warm pool member after a create claimed it: the owner's part of the start.

The container is not restarted and the agent keeps its control connection (a claim that looked like a
re-init to the agent would end every session in it). The hub sends the agent one `claim` message on that
connection: the owner's environment for everything it starts from then on (sessions already open keep
theirs), and the repository to clone with the owner's brokered credentials, after which the agent reports
`starting` then `ready` as at a first start. Dev container workspaces then run their post-create hooks
(tunnel/devcontainer.py), which the pool left for the owner.
"""

from __future__ import annotations

from typing import Any

from dockyard import logs as logging
from dockyard.tunnel.hub import AgentHub

log = logging.get(__name__)


async def after_claim(hub: AgentHub, workspace_id: str, message: dict[str, Any]) -> bool:
    """Tell the agent it was claimed; False when this replica does not hold it (see docs: the claim message
    is not relayed yet, so the owner's environment then applies from the workspace's next start)."""
    hooks = bool(message.get("hooks"))
    wire_message = {key: value for key, value in message.items() if key != "hooks"}
    if not await hub.tell(workspace_id, wire_message):
        log.warning(
            "a claimed workspace's agent is not held here; its owner's part waits", workspace=workspace_id
        )
        return False
    if hooks and not message.get("git") and hub.on_ready is not None:
        # Nothing for the agent to report first: the post-create hooks start now and mark it ready.
        await hub.on_ready(workspace_id)
    return True
