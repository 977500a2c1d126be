"""What the hub records of agents in the database (the `workspace_agents` row) and its wire form."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from dockyard.accounts.actor import Actor
from dockyard.gitauth import broker
from dockyard.provisioner import logs, tasks
from dockyard.store import audit
from dockyard.store.models import TemplateVersion, User, Workspace, WorkspaceAgent, WorkspaceBuild
from dockyard.store.types import utcnow
from dockyard.templates import formats
from dockyard.templates import service as templates
from dockyard.tunnel.links import Origin
from dockyard_sdk import models as wire
from dockyard_sdk.manifest import GitSpec, TemplateManifest
from dockyard_sdk.units import parse_duration

# A row that says "connected" but has not been refreshed for this long belongs to a server that died.
STALE_AFTER = timedelta(seconds=90)
# Activity is written at most this often per workspace: idle auto-stop needs minutes, not milliseconds.
ACTIVITY_EVERY = timedelta(seconds=30)
# Who audit rows about agent connections name: whatever connected, not a user.
AGENT_ACTOR = Actor(
    user_id="", username="agent", role=wire.Role.MEMBER, organization_id="", scopes=frozenset()
)
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


def _rendered(db: Session, workspace_id: str) -> tuple[Workspace, User, TemplateManifest] | None:
    """The workspace's manifest as its latest start build rendered it; None for an unknown workspace."""
    from dockyard.provisioner.workspaces import render_for

    workspace = db.get(Workspace, workspace_id)
    if workspace is None or workspace.deleted:
        return None
    build = db.scalar(
        select(WorkspaceBuild)
        .where(WorkspaceBuild.workspace_id == workspace_id, WorkspaceBuild.transition == "start")
        .order_by(WorkspaceBuild.number.desc())
        .limit(1)
    )
    owner = db.get(User, workspace.owner_id)
    if build is None or owner is None:
        return None
    version = db.get(TemplateVersion, build.template_version_id)
    if version is None:
        return None
    manifest = templates.version_to_wire(version).manifest
    return workspace, owner, render_for(manifest, build.parameters, workspace=workspace, owner=owner)


def welcome(sessions: sessionmaker[Session], workspace_id: str) -> dict[str, Any] | None:
    """The scripts an agent runs, from the workspace's latest start build; None for an unknown workspace."""
    with sessions() as db:
        found = _rendered(db, workspace_id)
    if found is None:
        return None
    rendered = found[2]
    return {
        "startup_script": rendered.startup_script,
        "startup_timeout": parse_duration(rendered.startup_timeout).total_seconds(),
        "shutdown_script": rendered.shutdown_script,
        "git": _git_welcome(rendered.git),
    }


def _git_welcome(spec: GitSpec | None) -> dict[str, str] | None:
    """What the agent clones before the startup script; `error` (a start_error) when it must not."""
    if spec is None or not spec.repo:
        return None
    # A template may write the repository literally rather than through a `git-url` parameter: the same
    # checks apply, so no value reaches git as an option or a remote helper.
    try:
        repo = formats.git_url(spec.repo)
        branch = formats.git_ref(spec.branch)
    except ValueError as exc:
        return {"error": f"git: {exc}"}
    return {"repo": repo, "branch": branch, "path": spec.path}


def git_credential(
    sessions: sessionmaker[Session], workspace_id: str, *, protocol: str, host: str
) -> dict[str, Any]:
    """An agent asks for a git credential for its workspace's git (`gitauth/broker.py` decides)."""
    with sessions() as db:
        found = _rendered(db, workspace_id)
        if found is None:
            return {"error": "the workspace no longer exists"}
        workspace, owner, rendered = found
        return broker.release(
            db, AGENT_ACTOR, workspace=workspace, owner=owner, spec=rendered.git, protocol=protocol, host=host
        )


def live_workspaces(sessions: sessionmaker[Session], workspace_ids: set[str]) -> set[str]:
    """Those of `workspace_ids` that exist and are not deleted."""
    if not workspace_ids:
        return set()
    with sessions() as db:
        return set(
            db.scalars(
                select(Workspace.id).where(Workspace.id.in_(workspace_ids), Workspace.deleted.is_(False))
            )
        )


def refused(sessions: sessionmaker[Session], origin: Origin, reason: str, *, claimed: str | None) -> None:
    """An audit row for a connection the hub turned away: a security event in the workspace it came from."""
    with sessions() as db:
        workspace = db.get(Workspace, origin.workspace_id)
        audit.record(
            db,
            AGENT_ACTOR,
            "agent.refused",
            resource_type="workspace",
            resource_id=origin.workspace_id,
            resource_name=workspace.name if workspace is not None else "",
            status_code=403,
            detail={"reason": reason, "transport": origin.transport, "claimed_workspace": claimed},
        )
        db.commit()


def _row(db: Session, workspace_id: str) -> WorkspaceAgent:
    row = db.get(WorkspaceAgent, workspace_id)
    if row is None:
        row = WorkspaceAgent(workspace_id=workspace_id, stats={}, ports=[])
        db.add(row)
    return row


def connected(sessions: sessionmaker[Session], workspace_id: str, version: str) -> None:
    with sessions() as db:
        row = _row(db, workspace_id)
        now = utcnow()
        row.connection = wire.AgentConnection.CONNECTED
        row.version = version
        row.first_connected_at = row.first_connected_at or now
        row.last_connected_at = now
        row.last_seen_at = now
        db.commit()


def disconnected(sessions: sessionmaker[Session], workspace_id: str) -> None:
    with sessions() as db:
        row = db.get(WorkspaceAgent, workspace_id)
        if row is not None:
            row.connection = wire.AgentConnection.DISCONNECTED
            row.disconnected_at = utcnow()
            db.commit()


def lifecycle(
    sessions: sessionmaker[Session],
    workspace_id: str,
    state: str,
    exit_code: int | None,
    *,
    error: str | None = None,
) -> None:
    try:
        value = wire.AgentLifecycle(state)
    except ValueError:
        return
    with sessions() as db:
        row = _row(db, workspace_id)
        now = utcnow()
        row.lifecycle = value
        row.last_seen_at = now
        if value == wire.AgentLifecycle.STARTING:
            row.started_at = row.started_at or now
        elif value in SETTLED:
            row.ready_at = row.ready_at or now
            row.exit_code = exit_code
            row.error = error[:2000] if error else None
        db.commit()


def append_log(sessions: sessionmaker[Session], workspace_id: str, source: str, lines: list[str]) -> None:
    """Agent output goes into the log of the build that started the container, next to its other stages."""
    with sessions() as db:
        row = db.get(WorkspaceAgent, workspace_id)
        build_id = row.build_id if row is not None else None
    if build_id:
        logs.append(sessions, build_id, source, "\n".join(lines))


def stats(sessions: sessionmaker[Session], workspace_id: str, message: dict[str, Any]) -> None:
    fields = wire.AgentStats.model_fields
    values = {key: message.get(key) for key in fields if isinstance(message.get(key), int | float)}
    ports = [
        {"port": int(p["port"]), "address": str(p.get("address", "")), "family": str(p.get("family", "ipv4"))}
        for p in message.get("ports") or []
        if isinstance(p, dict) and isinstance(p.get("port"), int)
    ]
    with sessions() as db:
        db.execute(
            update(WorkspaceAgent)
            .where(WorkspaceAgent.workspace_id == workspace_id)
            .values(stats=values, ports=ports[:256], last_seen_at=utcnow())
        )
        db.commit()


def touch(sessions: sessionmaker[Session], workspace_id: str) -> None:
    """Record that someone used the workspace (SSH, terminal, exec, files, port forward)."""
    now = utcnow()
    with sessions() as db:
        db.execute(
            update(Workspace)
            .where(
                Workspace.id == workspace_id,
                (Workspace.last_used_at.is_(None)) | (Workspace.last_used_at < now - ACTIVITY_EVERY),
            )
            # Activity is not an edit: updated_at keeps its value.
            .values(last_used_at=now, updated_at=Workspace.updated_at)
        )
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


def task(sessions: sessionmaker[Session], workspace_id: str, message: dict[str, Any]) -> bool:
    """Record a task state the agent relayed; False (and nothing written) when the report is malformed."""
    try:
        report = wire.TaskReport.model_validate(
            {key: message.get(key) for key in ("state", "summary", "links") if key in message}
        )
    except ValueError:
        return False
    with sessions() as db:
        workspace = db.get(Workspace, workspace_id)
        if workspace is None or workspace.deleted:
            return False
        tasks.report(db, workspace, report, actor=None, source="agent")
    return True


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
