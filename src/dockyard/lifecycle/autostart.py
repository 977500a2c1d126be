"""Autostart: a stopped workspace whose cron schedule came due gets a `start` build (reason `autostart`)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard import logs as logging
from dockyard.errors import Conflict
from dockyard.provisioner import builds, schedules
from dockyard.store.models import Workspace
from dockyard.store.types import utcnow
from dockyard.workspaces.status import derive
from dockyard_sdk.models import BuildReason, Transition, WorkspaceStatus

log = logging.get(__name__)

_STARTABLE = {WorkspaceStatus.STOPPED, WorkspaceStatus.CANCELED, WorkspaceStatus.FAILED}


def start_due(db: Session) -> list[str]:
    """Start the stopped workspaces whose schedule is due and move every due one to its next time."""
    due = db.execute(
        select(Workspace.id, Workspace.name).where(
            Workspace.deleted.is_(False),
            Workspace.autostart_next_at.is_not(None),
            Workspace.autostart_next_at <= utcnow(),
        )
    ).all()
    db.rollback()
    started = []
    for workspace_id, name in due:
        try:
            if _start(db, workspace_id):
                log.info("autostart", workspace=name)
                started.append(name)
        except Exception:
            # The outermost iteration over rows (see ttl.py): logged, and the row is tried again next pass.
            db.rollback()
            log.exception("autostart pass failed for one workspace", workspace=name)
    return started


def _start(db: Session, workspace_id: str) -> bool:
    workspace = db.get(Workspace, workspace_id)
    now = utcnow()
    if workspace is None or workspace.autostart_next_at is None or workspace.autostart_next_at > now:
        return False
    assert workspace.autostart_schedule is not None
    # Move on first: a workspace that is running at its time, or that cannot start now, waits for the next.
    workspace.autostart_next_at = schedules.next_after(
        workspace.autostart_schedule, workspace.autostart_timezone or "UTC", now
    )
    current = builds.latest_or_none(db, workspace)
    if current is None or derive(workspace, current)[0] not in _STARTABLE:
        db.commit()
        return False
    try:
        builds.create_build(db, workspace, Transition.START, actor=None, reason=BuildReason.AUTOSTART)
    except Conflict:
        db.rollback()
        return False
    return True
