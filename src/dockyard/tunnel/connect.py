"""Getting a workspace into a state a client can connect to: running, with its agent connected."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from dockyard.accounts.actor import Actor
from dockyard.errors import Conflict
from dockyard.provisioner import builds, events
from dockyard.store.models import Workspace, WorkspaceAgent
from dockyard.tunnel import state
from dockyard.tunnel.frames import FrameStream
from dockyard.workspaces import service as workspaces
from dockyard.workspaces.status import derive
from dockyard_sdk import models as wire

# How long a running workspace's agent may take to (re)connect before a request gives up.
CONNECT_GRACE = 15.0
_STARTABLE = {wire.WorkspaceStatus.STOPPED, wire.WorkspaceStatus.CANCELED, wire.WorkspaceStatus.FAILED}


class Hub(Protocol):
    """What clients need of agents: the server's own AgentHub, or a RemoteHub reaching them through it."""

    def connected(self, workspace_id: str) -> bool: ...

    async def open(self, workspace_id: str, kind: str, **params: Any) -> FrameStream: ...


def _status(
    sessions: sessionmaker[Session], workspace_id: str
) -> tuple[str, wire.WorkspaceStatus, str | None]:
    with sessions() as db:
        row = db.get(Workspace, workspace_id)
        assert row is not None
        loaded = workspaces.load(db, row)
        status, _ = derive(loaded.workspace, loaded.build)
        agent = db.get(WorkspaceAgent, workspace_id)
        return row.name, status, agent.lifecycle if agent is not None else None


def _start(sessions: sessionmaker[Session], actor: Actor, workspace_id: str) -> None:
    with sessions() as db:
        row = db.get(Workspace, workspace_id)
        assert row is not None
        try:
            builds.create_build(db, row, wire.Transition.START, actor=actor)
        except Conflict:
            # Someone else started it a moment ago; waiting below covers that too.
            db.rollback()


async def require_running(sessions: sessionmaker[Session], hub: Hub, workspace_id: str) -> None:
    """Refuse (409, naming the status) unless the workspace runs; then wait briefly for its agent."""
    name, status, _ = await asyncio.to_thread(_status, sessions, workspace_id)
    if status != wire.WorkspaceStatus.RUNNING:
        raise Conflict(
            f"Workspace {name!r} is {status.value}.",
            detail="Start it first (dockyard start)."
            if status in _STARTABLE
            else "Wait for its build to finish.",
        )
    await wait_connected(hub, workspace_id, CONNECT_GRACE, sessions=sessions)


async def wait_connected(
    hub: Hub, workspace_id: str, timeout: float, *, sessions: sessionmaker[Session] | None = None
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not hub.connected(workspace_id):
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise Conflict(
                "The workspace runs but its agent is not connected.",
                detail="Check the workspace's build log; the image needs python3 (3.9+) for the agent.",
            )
        if sessions is None:
            await asyncio.sleep(min(remaining, 0.5))
        else:
            await events.wait_for_change(sessions, workspace_id, min(remaining, 0.5))


async def ensure_ready(
    sessions: sessionmaker[Session],
    hub: Hub,
    actor: Actor,
    workspace_id: str,
    *,
    timeout: float = 300.0,
) -> str | None:
    """Start the workspace if it is stopped, wait until its agent connected and its startup script settled.

    Returns the agent's lifecycle (`ready`, or `start_error`/`start_timeout`, which a client may still enter).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    started = False
    while True:
        name, status, lifecycle = await asyncio.to_thread(_status, sessions, workspace_id)
        if status in {wire.WorkspaceStatus.DELETED, wire.WorkspaceStatus.DELETING}:
            raise Conflict(f"Workspace {name!r} is {status.value}.")
        if status in _STARTABLE:
            if started:
                raise Conflict(f"Workspace {name!r} could not be started: it is {status.value}.")
            await asyncio.to_thread(_start, sessions, actor, workspace_id)
            started = True
            continue
        if (
            status == wire.WorkspaceStatus.RUNNING
            and hub.connected(workspace_id)
            and lifecycle in {s.value for s in state.SETTLED}
        ):
            return lifecycle
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise Conflict(
                f"Workspace {name!r} did not become ready in {timeout:.0f} s (it is {status.value}, "
                f"agent {lifecycle or 'not started'})."
            )
        await events.wait_for_change(sessions, workspace_id, min(remaining, 1.0))
