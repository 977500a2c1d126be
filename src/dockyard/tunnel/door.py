"""The provisioner's way to give a workspace's agent its link (`provisioner.worker.AgentDoor`).

Made where the server is put together and handed to the workers, so the provisioner never imports the tunnel.
"""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from dockyard.runtimes.plan import AgentLink, Egress, LinkKind
from dockyard.tunnel import tokens
from dockyard.tunnel.links import AgentLinks


class LinkDoor:
    """Agents reach the hub through a private unix socket in each workspace's link folder, or, when the
    deployment names the control plane's URL as workspaces see it (`--agent-url`), over the network to any
    replica. The link folder holds the agent's token either way."""

    def __init__(self, sessions: sessionmaker[Session], links: AgentLinks, *, url: str = "") -> None:
        self.sessions = sessions
        self.links = links
        self.url = url

    def link(self, capabilities: frozenset[LinkKind], *, egress: Egress) -> AgentLink | None:
        # A workspace without egress, or whose only way out is the egress proxy, has no route to a replica; it
        # keeps the socket, which only the server on its host listens on. A runtime that offers the network link
        # alone keeps the route to the control plane open itself (Kubernetes: its network policies admit
        # Dockyard's pods whatever the egress).
        network_only = LinkKind.UNIX_SOCKET not in capabilities
        if self.url and (egress == Egress.ALL or network_only) and LinkKind.NETWORK in capabilities:
            return AgentLink(kind=LinkKind.NETWORK, url=self.url)
        if LinkKind.UNIX_SOCKET in capabilities:
            return AgentLink(kind=LinkKind.UNIX_SOCKET)
        return None

    def open(self, workspace_id: str, *, kind: LinkKind, uid: int) -> None:
        with self.sessions() as db:
            token = tokens.issue(tokens.load_key(db), workspace_id)
        self.links.prepare(workspace_id, token=token, uid=uid)

    def close(self, workspace_id: str) -> None:
        self.links.remove(workspace_id)
