"""A workspace's status is derived from its latest build (and what the reconciler saw), never stored twice."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, func, not_, or_, select
from sqlalchemy.orm import aliased

from dockyard.store.models import Workspace, WorkspaceBuild
from dockyard_sdk.models import BuildStatus, Transition, WorkspaceStatus

_IN_PROGRESS = {
    Transition.START: WorkspaceStatus.STARTING,
    Transition.STOP: WorkspaceStatus.STOPPING,
    Transition.DELETE: WorkspaceStatus.DELETING,
}
_DONE = {
    Transition.START: WorkspaceStatus.RUNNING,
    Transition.STOP: WorkspaceStatus.STOPPED,
    Transition.DELETE: WorkspaceStatus.DELETED,
}
ACTIVE_BUILD_STATUSES = (BuildStatus.PENDING, BuildStatus.RUNNING, BuildStatus.CANCELING)


def _latest_build() -> tuple[type[WorkspaceBuild], ColumnElement[bool]]:
    """An alias of the builds table and the join condition that picks each workspace's latest build (the
    unique (workspace_id, number) index answers the correlated max)."""
    build = aliased(WorkspaceBuild, name="latest_build")
    newest = (
        select(func.max(WorkspaceBuild.number))
        .where(WorkspaceBuild.workspace_id == Workspace.id)
        .correlate(Workspace)
        .scalar_subquery()
    )
    return build, and_(build.workspace_id == Workspace.id, build.number == newest)


# Made once: an alias copies every column of the table, which cost a list more than its own statements.
LATEST, ON_LATEST = _latest_build()


def derive(workspace: Workspace, build: WorkspaceBuild) -> tuple[WorkspaceStatus, str]:
    """(status, reason). A finished start whose container died behind Dockyard's back reads as failed."""
    transition = Transition(build.transition)
    status = BuildStatus(build.status)
    if status == BuildStatus.PENDING:
        return WorkspaceStatus.PENDING if transition == Transition.START else _IN_PROGRESS[transition], ""
    if status == BuildStatus.RUNNING:
        return _IN_PROGRESS[transition], ""
    if status == BuildStatus.CANCELING:
        return WorkspaceStatus.CANCELING, ""
    if status == BuildStatus.CANCELED:
        return WorkspaceStatus.CANCELED, "the build was canceled"
    if status == BuildStatus.FAILED:
        return WorkspaceStatus.FAILED, build.error
    if transition == Transition.START and workspace.drift_state:
        return WorkspaceStatus.FAILED, workspace.drift_reason or workspace.drift_state
    return _DONE[transition], ""


def _drifted() -> ColumnElement[bool]:
    return and_(Workspace.drift_state.is_not(None), Workspace.drift_state != "")


def status_is(status: WorkspaceStatus, build: type[WorkspaceBuild] | Any) -> ColumnElement[bool]:
    """`derive(...) == status` as a WHERE clause over a workspace and its latest `build` (an alias), so lists
    filter and page by status in SQL. `tests/workspaces/test_queries.py` holds the two to the same answers."""
    start, stop, delete = Transition.START.value, Transition.STOP.value, Transition.DELETE.value
    pending, running = BuildStatus.PENDING.value, BuildStatus.RUNNING.value
    succeeded = build.status == BuildStatus.SUCCEEDED.value
    clauses: dict[WorkspaceStatus, ColumnElement[bool]] = {
        WorkspaceStatus.PENDING: and_(build.status == pending, build.transition == start),
        WorkspaceStatus.STARTING: and_(build.status == running, build.transition == start),
        WorkspaceStatus.STOPPING: and_(build.status.in_((pending, running)), build.transition == stop),
        WorkspaceStatus.DELETING: and_(build.status.in_((pending, running)), build.transition == delete),
        WorkspaceStatus.CANCELING: build.status == BuildStatus.CANCELING.value,
        WorkspaceStatus.CANCELED: build.status == BuildStatus.CANCELED.value,
        WorkspaceStatus.FAILED: or_(
            build.status == BuildStatus.FAILED.value, and_(succeeded, build.transition == start, _drifted())
        ),
        WorkspaceStatus.RUNNING: and_(succeeded, build.transition == start, not_(_drifted())),
        WorkspaceStatus.STOPPED: and_(succeeded, build.transition == stop),
        WorkspaceStatus.DELETED: and_(succeeded, build.transition == delete),
    }
    return clauses[status]
