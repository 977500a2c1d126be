"""What the hub records of agents in the database (the `workspace_agents` row) and its wire form."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from dockyard.accounts.actor import Actor
from dockyard.gitauth import broker
from dockyard.gitauth.pktline import RefUpdate
from dockyard.gitauth.proxy import Upstream
from dockyard.provisioner import builds, logs, metrics, tasks
from dockyard.provisioner.agents import SETTLED, STALE_AFTER, limits_reason, reset, to_wire
from dockyard.provisioner.lifetimes import ACTIVITY_EVERY, ACTIVITY_HEARTBEAT
from dockyard.runtimes.plan import AgentPlan, WorkspacePlan
from dockyard.store import audit
from dockyard.store.models import User, Workspace, WorkspaceAgent, WorkspaceBuild
from dockyard.store.types import utcnow
from dockyard.tunnel.links import Origin
from dockyard_sdk import models as wire
from dockyard_sdk.manifest import GitPush, GitSpec

__all__ = [
    "ACTIVITY_EVERY",
    "ACTIVITY_HEARTBEAT",
    "SETTLED",
    "STALE_AFTER",
    "limits_reason",
    "reset",
    "to_wire",
]

# Who audit rows about agent connections name: whatever connected, not a user.
AGENT_ACTOR = Actor(
    user_id="", username="agent", role=wire.Role.MEMBER, organization_id="", scopes=frozenset()
)


def welcome(sessions: sessionmaker[Session], workspace_id: str) -> dict[str, Any] | None:
    """The scripts an agent runs (and the repository it clones first), from the plan of the workspace's latest
    start build; None for an unknown workspace. A start build made before plans were stored has none: its agent
    gets no scripts (it ran them when it first connected, and a reconnecting agent does not run them again)."""
    with sessions() as db:
        workspace = db.get(Workspace, workspace_id)
        if workspace is None or workspace.deleted:
            return None
        plan = _latest_plan(db, workspace)
        pooled = workspace.prebuild_preset is not None
    agent = plan.agent if plan is not None else None
    welcome = (agent or AgentPlan()).welcome()
    if pooled:
        # A warm pool member clones after its claim, with its owner's credentials (tunnel/claims.py).
        welcome["git"] = None
    return welcome


def _latest_plan(db: Session, workspace: Workspace) -> WorkspacePlan | None:
    build = builds.latest_start(db, workspace.id)
    return WorkspacePlan.from_stored(build.plan) if build is not None and build.plan else None


def git_credential(
    sessions: sessionmaker[Session], workspace_id: str, *, protocol: str, host: str
) -> dict[str, Any]:
    """An agent asks for a git credential for its workspace's repository (`gitauth/broker.py` decides), as
    the plan of its latest start build names it."""
    with sessions() as db:
        found = _git_spec(db, workspace_id)
        if found is None:
            return {"error": "the workspace no longer exists"}
        workspace, owner, spec = found
        return broker.release(
            db, AGENT_ACTOR, workspace=workspace, owner=owner, spec=spec, protocol=protocol, host=host
        )


def git_upstream(sessions: sessionmaker[Session], workspace_id: str) -> Upstream:
    """Where the git proxy forwards a connection from this workspace's agent, and with which credential."""
    with sessions() as db:
        found = _git_spec(db, workspace_id)
        if found is None:
            return Upstream(error="dockyard: the workspace no longer exists")
        workspace, owner, spec = found
        return broker.upstream(db, AGENT_ACTOR, workspace=workspace, owner=owner, spec=spec)


def git_push(
    sessions: sessionmaker[Session],
    workspace_id: str,
    updates: tuple[RefUpdate, ...],
    refused: dict[str, str],
) -> None:
    with sessions() as db:
        workspace = db.get(Workspace, workspace_id)
        if workspace is not None:
            broker.record_push(db, AGENT_ACTOR, workspace=workspace, updates=updates, refused=refused)


def _git_spec(db: Session, workspace_id: str) -> tuple[Workspace, User, GitSpec | None] | None:
    """The workspace, its owner and its repository as the plan of its latest start build names it."""
    workspace = db.get(Workspace, workspace_id)
    owner = db.get(User, workspace.owner_id) if workspace is not None and not workspace.deleted else None
    if workspace is None or owner is None:
        return None
    plan = _latest_plan(db, workspace)
    git = plan.agent.git if plan is not None and plan.agent is not None else None
    spec = (
        GitSpec(repo=git.repo, branch=git.branch, path=git.path, push=GitPush(git.push))
        if git is not None and not git.error
        else None
    )
    return workspace, owner, spec


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
        ready = _time_to_ready(db, row.build_id) if value == wire.AgentLifecycle.READY else None
        db.commit()
    if ready is not None:
        metrics.READY.labels(*ready[:2]).observe(ready[2])


def _time_to_ready(db: Session, build_id: str | None) -> tuple[str, str, float] | None:
    """For a workspace's first build (a create or a claim): the create-to-ready time, once, in its timings.
    Returns the histogram's labels and value."""
    build = db.get(WorkspaceBuild, build_id) if build_id else None
    if build is None or build.ready_path is None or "ready" in (build.timings or {}):
        return None
    seconds = round((utcnow() - build.created_at).total_seconds(), 4)
    build.timings = {**(build.timings or {}), "ready": seconds}
    workspace = db.get(Workspace, build.workspace_id)
    template = workspace.template.name if workspace is not None else ""
    return template, build.ready_path, seconds


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


def touch(sessions: sessionmaker[Session], workspace_id: str, reason: str) -> None:
    """Record that someone used the workspace, and how: `ssh`, `terminal`, `exec`, `port_forward`, `files`.

    This is what idle auto-stop reads (lifecycle/idle.py); a process running in the background alone never
    calls it.
    """
    now = utcnow()
    with sessions() as db:
        db.execute(
            update(Workspace)
            .where(
                Workspace.id == workspace_id,
                (Workspace.last_used_at.is_(None)) | (Workspace.last_used_at < now - ACTIVITY_EVERY),
            )
            # Activity is not an edit: updated_at keeps its value.
            .values(last_used_at=now, last_activity_reason=reason, updated_at=Workspace.updated_at)
        )
        db.commit()


def record_use(
    sessions: sessionmaker[Session], actor: Actor, workspace_id: str, action: str, detail: dict[str, Any]
) -> None:
    """An audit row for a use of a running workspace (exec, terminal, port forward, files, SSH), naming the token
    it was made with: what a token did inside a workspace is in the audit log, not only what it changed."""
    with sessions() as db:
        workspace = db.get(Workspace, workspace_id)
        audit.record(
            db,
            actor,
            action,
            resource_type="workspace",
            resource_id=workspace_id,
            resource_name=workspace.name if workspace else "",
            detail={**detail, "token": actor.token_id} if actor.token_id else detail,
        )
        db.commit()


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
        # Audited as the agent's: everything done with an agent token is in the audit log.
        tasks.report(db, workspace, report, actor=AGENT_ACTOR, source="agent")
    return True
