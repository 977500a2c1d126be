"""A workspace's status is derived from its latest build (and what the reconciler saw), never stored twice."""

from __future__ import annotations

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
