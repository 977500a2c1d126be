"""A coding task's state on its workspace: reported from inside (the agent) or by an orchestrator (the API)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from dockyard.accounts.actor import Actor
from dockyard.store import audit
from dockyard.store.models import Workspace
from dockyard.store.types import utcnow
from dockyard_sdk import models as wire


def report(
    db: Session, workspace: Workspace, task: wire.TaskReport, *, actor: Actor | None, source: str
) -> None:
    """Record the task's new state (the caller publishes the change). Audited when a token reported it."""
    workspace.task_state = task.state.value
    workspace.task_summary = task.summary
    workspace.task_links = [link.model_dump() for link in task.links]
    workspace.task_source = source
    workspace.task_updated_at = utcnow()
    if actor is not None:
        audit.record(
            db,
            actor,
            "workspace.task",
            resource_type="workspace",
            resource_id=workspace.id,
            resource_name=workspace.name,
            detail={"state": task.state.value, "summary": task.summary[:200]},
        )
    db.commit()


def to_wire(workspace: Workspace) -> wire.TaskStatus | None:
    if workspace.task_state is None or workspace.task_updated_at is None:
        return None
    return wire.TaskStatus(
        state=wire.TaskState(workspace.task_state),
        summary=workspace.task_summary or "",
        links=[wire.TaskLink.model_validate(link) for link in workspace.task_links or []],
        source=workspace.task_source or "agent",
        updated_at=workspace.task_updated_at,
    )
