"""The agent row (`workspace_agents`) as builds and workspace reads see it.

The hub (tunnel/state.py) writes what agents report; this is the part the provisioner needs without importing
the tunnel: a start build resets the row, and a workspace's wire form shows it.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from dockyard.store.models import WorkspaceAgent
from dockyard.store.types import utcnow
from dockyard_sdk import models as wire

# A row that says "connected" but has not been refreshed for this long belongs to a server that died.
STALE_AFTER = timedelta(seconds=90)
SETTLED = {wire.AgentLifecycle.READY, wire.AgentLifecycle.START_ERROR, wire.AgentLifecycle.START_TIMEOUT}


def reset(db: Session, workspace_id: str, build_id: str) -> None:
    """A start build is about to (re)start the container: the agent starts over.

    Not when the build is being retried (its worker died): the container this build started may be running
    already, and its agent, connected and reporting, will not say again what it said before.
    """
    row = db.get(WorkspaceAgent, workspace_id)
    if row is not None and row.build_id == build_id:
        return
    if row is None:
        row = WorkspaceAgent(workspace_id=workspace_id, stats={}, ports=[])
        db.add(row)
    row.build_id = build_id
    row.connection = wire.AgentConnection.CONNECTING
    row.lifecycle = wire.AgentLifecycle.CREATED
    row.exit_code = None
    row.error = None
    row.started_at = None
    row.ready_at = None
    row.stats = {}
    row.ports = []
    db.commit()


def to_wire(row: WorkspaceAgent | None) -> wire.WorkspaceAgent | None:
    if row is None:
        return None
    status = wire.AgentConnection(row.connection)
    if (
        status == wire.AgentConnection.CONNECTED
        and row.last_seen_at is not None
        and utcnow() - row.last_seen_at > STALE_AFTER
    ):
        status = wire.AgentConnection.DISCONNECTED
    return wire.WorkspaceAgent(
        status=status,
        lifecycle=wire.AgentLifecycle(row.lifecycle),
        version=row.version,
        exit_code=row.exit_code,
        error=row.error,
        first_connected_at=row.first_connected_at,
        last_connected_at=row.last_connected_at,
        disconnected_at=row.disconnected_at,
        last_seen_at=row.last_seen_at,
        started_at=row.started_at,
        ready_at=row.ready_at,
        stats=wire.AgentStats(**row.stats) if row.stats else None,
        ports=[wire.ListeningPort(**p) for p in row.ports],
    )


def limits_reason(stats: wire.AgentStats | None) -> str:
    """A running workspace's reason when it has run into its memory or process limit (since it started)."""
    if stats is None:
        return ""
    parts = []
    if stats.oom_kills:
        killed = f"{stats.oom_kills} process" + ("es" if stats.oom_kills != 1 else "")
        parts.append(f"memory limit hit ({killed} killed out of memory)")
    if stats.pids_limit_hits:
        limit = f" {stats.pids_limit}" if stats.pids_limit else ""
        refused = f"{stats.pids_limit_hits} fork" + ("s" if stats.pids_limit_hits != 1 else "")
        parts.append(f"process limit{limit} hit ({refused} refused)")
    return "; ".join(parts)
