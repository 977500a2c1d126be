"""The one place that creates workspace builds: for users, the TTL and idle loops, and the reconciler alike."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from dockyard.accounts.actor import Actor
from dockyard.errors import Conflict, NotFound
from dockyard.provisioner import events, queue, quotas
from dockyard.store import audit
from dockyard.store.models import Workspace, WorkspaceBuild
from dockyard.store.types import utcnow
from dockyard.workspaces.status import ACTIVE_BUILD_STATUSES, derive
from dockyard_sdk.models import BuildReason, BuildStatus, Transition, WorkspaceStatus


def latest_or_none(db: Session, workspace: Workspace) -> WorkspaceBuild | None:
    return db.scalar(
        select(WorkspaceBuild)
        .where(WorkspaceBuild.workspace_id == workspace.id)
        .order_by(WorkspaceBuild.number.desc())
        .limit(1)
    )


def latest_start(db: Session, workspace_id: str) -> WorkspaceBuild | None:
    """The workspace's newest start build: what it runs, or ran last (its plan, apps and parameters)."""
    return db.scalar(
        select(WorkspaceBuild)
        .where(
            WorkspaceBuild.workspace_id == workspace_id, WorkspaceBuild.transition == Transition.START.value
        )
        .order_by(WorkspaceBuild.number.desc())
        .limit(1)
    )


def latest_start_ids(db: Session, workspace_ids: Sequence[str]) -> dict[str, str]:
    """`latest_start` for many workspaces in one statement, ids only (workspace id -> build id); a workspace
    without a start build is left out."""
    if not workspace_ids:
        return {}
    newest = (
        select(WorkspaceBuild.workspace_id, func.max(WorkspaceBuild.number).label("number"))
        .where(
            WorkspaceBuild.workspace_id.in_(workspace_ids),
            WorkspaceBuild.transition == Transition.START.value,
        )
        .group_by(WorkspaceBuild.workspace_id)
        .subquery()
    )
    rows = db.execute(
        select(WorkspaceBuild.workspace_id, WorkspaceBuild.id).join(
            newest,
            and_(
                WorkspaceBuild.workspace_id == newest.c.workspace_id, WorkspaceBuild.number == newest.c.number
            ),
        )
    )
    return {workspace_id: build_id for workspace_id, build_id in rows}


def latest(db: Session, workspace: Workspace) -> WorkspaceBuild:
    build = latest_or_none(db, workspace)
    if build is None:  # pragma: no cover - a workspace is created with its first build
        raise NotFound(f"Workspace {workspace.name!r} has no builds.")
    return build


def check_transition(workspace: Workspace, current: WorkspaceBuild | None, transition: Transition) -> None:
    if workspace.deleted:
        raise Conflict(f"Workspace {workspace.name!r} is deleted.", detail="Create a new workspace instead.")
    if current is None:
        return
    if current.status in ACTIVE_BUILD_STATUSES:
        raise Conflict(
            f"Workspace {workspace.name!r} has a build in progress "
            f"(#{current.number} {current.transition}, {current.status}).",
            detail="Wait for it to finish, or cancel it.",
        )
    status, _ = derive(workspace, current)
    if transition == Transition.START and status == WorkspaceStatus.RUNNING:
        raise Conflict(f"Workspace {workspace.name!r} is already running.")
    if transition == Transition.STOP and status == WorkspaceStatus.STOPPED:
        raise Conflict(f"Workspace {workspace.name!r} is already stopped.")


def create_build(
    db: Session,
    workspace: Workspace,
    transition: Transition,
    *,
    actor: Actor | None,
    reason: BuildReason = BuildReason.INITIATOR,
    record_audit: bool = True,
    template_version_id: str | None = None,
    parameters: dict[str, Any] | None = None,
    commit: bool = True,
) -> WorkspaceBuild:
    """Check the transition is allowed from the current status (else Conflict) and queue the build."""
    current = latest_or_none(db, workspace)
    check_transition(workspace, current, transition)
    if transition == Transition.START and actor is not None:
        quotas.check_start(db, actor, workspace)
    # The workspace holds the wanted version and parameters (PATCH changes them); each build snapshots them.
    template_version_id = template_version_id or workspace.template_version_id
    parameters = dict(workspace.parameters) if parameters is None else parameters
    build = WorkspaceBuild(
        workspace_id=workspace.id,
        number=(current.number + 1) if current is not None else 1,
        transition=transition.value,
        status=BuildStatus.PENDING,
        reason=reason.value,
        initiator_id=actor.user_id if actor is not None and actor.user_id else None,
        template_version_id=template_version_id,
        parameters=parameters,
        timings={},
        created_at=utcnow(),
    )
    db.add(build)
    if transition == Transition.START:
        workspace.template_version_id = template_version_id
        workspace.parameters = parameters
        workspace.drift_state = workspace.drift_reason = None
        workspace.deadline = (
            utcnow() + timedelta(seconds=workspace.ttl_seconds) if workspace.ttl_seconds else None
        )
    else:
        workspace.deadline = None
    workspace.updated_at = utcnow()
    if actor is not None and record_audit:
        audit.record(
            db,
            actor,
            f"workspace.{transition.value}",
            resource_type="workspace",
            resource_id=workspace.id,
            resource_name=workspace.name,
            status_code=201,
            detail={"build": build.number, "reason": reason.value},
        )
    if commit:
        db.commit()
        queue.wakeup.notify()
        events.job_queued(db, build.id)
        events.changed(db, workspace.id)
    return build


def claim_build(
    db: Session,
    workspace: Workspace,
    *,
    actor: Actor,
    plan: dict[str, Any],
    requested_at: datetime,
) -> WorkspaceBuild:
    """Record a warm pool claim as the workspace's next build: a `start` that has already succeeded, since the
    container runs and nothing is restarted. It carries the claimant's plan (their name, owner and env), which
    the agent's welcome reads from now on. The caller has moved the workspace to its new owner."""
    current = latest(db, workspace)
    quotas.check_start(db, actor, workspace)
    now = utcnow()
    build = WorkspaceBuild(
        workspace_id=workspace.id,
        number=current.number + 1,
        transition=Transition.START.value,
        status=BuildStatus.SUCCEEDED,
        reason=BuildReason.CLAIM.value,
        initiator_id=actor.user_id or None,
        template_version_id=current.template_version_id,
        parameters=dict(current.parameters),
        plan=plan,
        ready_path="pool_claim",
        timings={},
        created_at=requested_at,
        started_at=now,
        completed_at=now,
    )
    db.add(build)
    workspace.deadline = now + timedelta(seconds=workspace.ttl_seconds) if workspace.ttl_seconds else None
    workspace.updated_at = now
    return build


def cancel(db: Session, actor: Actor, build: WorkspaceBuild, workspace: Workspace) -> WorkspaceBuild:
    """Cancel a queued build at once; ask a running one to stop at its next step."""
    if build.status == BuildStatus.PENDING:
        build.status = BuildStatus.CANCELED
        build.completed_at = utcnow()
        build.error = "canceled before it started"
    elif build.status == BuildStatus.RUNNING:
        build.status = BuildStatus.CANCELING
        build.cancel_requested = True
    else:
        raise Conflict(
            f"Build #{build.number} is {build.status}; only pending or running builds can be canceled."
        )
    audit.record(
        db,
        actor,
        "workspace.build.cancel",
        resource_type="workspace",
        resource_id=workspace.id,
        resource_name=workspace.name,
        detail={"build": build.number},
    )
    db.commit()
    events.changed(db, workspace.id)
    return build
