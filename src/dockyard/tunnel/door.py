"""The provisioner's way to give a workspace's agent its link (`provisioner.worker.AgentDoor`).

Made where the server is put together and handed to the workers, so the provisioner never imports the tunnel.
"""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from dockyard.runtimes.plan import LinkKind
from dockyard.tunnel import tokens
from dockyard.tunnel.links import AgentLinks


class LinkDoor:
    """Agents reach the hub through a private unix socket in each workspace's link folder."""

    def __init__(self, sessions: sessionmaker[Session], links: AgentLinks) -> None:
        self.sessions = sessions
        self.links = links

    def link(self, capabilities: frozenset[LinkKind]) -> LinkKind | None:
        # A socket proves by itself which workspace a connection comes from, so it is preferred where offered.
        return LinkKind.UNIX_SOCKET if LinkKind.UNIX_SOCKET in capabilities else None

    def open(self, workspace_id: str, *, kind: LinkKind, uid: int) -> None:
        if kind != LinkKind.UNIX_SOCKET:
            raise ValueError(f"this server gives agents no {kind.value} link")
        with self.sessions() as db:
            token = tokens.issue(tokens.load_key(db), workspace_id)
        self.links.prepare(workspace_id, token=token, uid=uid)

    def close(self, workspace_id: str) -> None:
        self.links.remove(workspace_id)
