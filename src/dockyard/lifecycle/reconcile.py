"""Keeping Dockyard's view and the runtime's in step.

- builds left running by a worker that died are resumed (runtime calls are idempotent) or failed;
- a workspace whose container was removed, exited or OOM-killed behind Dockyard's back shows it;
- resources with Dockyard's labels but no live workspace are reported (and pruned on request).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard import logs as logging
from dockyard.provisioner import events, logs, queue
from dockyard.provisioner.instance import Instance
from dockyard.provisioner.worker import stale_after
from dockyard.runtimes.base import ContainerState, ManagedResource, Observation, Runtime
from dockyard.store.models import Workspace, WorkspaceBuild
from dockyard.store.types import utcnow
from dockyard.warmpool import store as warmnetworks
from dockyard.workspaces.status import LATEST, ON_LATEST
from dockyard_sdk.models import BuildStatus, Transition

log = logging.get(__name__)
MAX_ATTEMPTS = 3

_DRIFT_REASONS = {
    ContainerState.MISSING: "the container was removed outside Dockyard",
    ContainerState.OOM_KILLED: "the container was killed for running out of memory",
    ContainerState.STOPPED: "the container was stopped outside Dockyard",
}
# A stop sends SIGTERM; any other signal that ended the workload is what happened, not "stopped".
_STOP_SIGNAL = signal.SIGTERM


def killed_by(exit_code: int | None) -> str | None:
    """The signal that ended a workload, from its exit code (128 + the number): 137 is "killed (SIGKILL)"."""
    if exit_code is None or not 128 < exit_code < 128 + 65:
        return None
    try:
        return f"killed ({signal.Signals(exit_code - 128).name})"
    except ValueError:
        return f"killed (signal {exit_code - 128})"


def drift_reason(observation: Observation) -> str | None:
    # A succeeded start whose pod still reads pending is the kubelet's report lagging behind the agent's
    # hello (phases never go back to pending), not a workspace that stopped.
    if observation.state in (ContainerState.RUNNING, ContainerState.STARTING):
        return None
    killed = killed_by(observation.exit_code)
    if observation.state == ContainerState.EXITED and observation.exit_code is None:
        # No exit code: the runtime ended it without its workload exiting (a Kubernetes eviction).
        return f"the container ended: {observation.detail or 'no reason given'}"
    if observation.state == ContainerState.EXITED:
        return f"the container exited with code {observation.exit_code}" + (
            f": {killed}" if killed else f": {observation.detail}" if observation.detail else ""
        )
    if observation.state == ContainerState.STOPPED and killed and observation.exit_code != 128 + _STOP_SIGNAL:
        return f"the container's workload was {killed}"
    return _DRIFT_REASONS[observation.state]


def recover_stale_builds(db: Session) -> int:
    """Requeue builds whose worker stopped sending heartbeats; fail them after MAX_ATTEMPTS."""
    cutoff = utcnow() - stale_after()
    active = [BuildStatus.RUNNING, BuildStatus.CANCELING]
    stale = db.scalars(
        select(WorkspaceBuild.id).where(
            WorkspaceBuild.status.in_(active), WorkspaceBuild.heartbeat_at < cutoff
        )
    ).all()
    return _requeue(
        db,
        list(stale),
        why="its worker stopped sending heartbeats",
        still=lambda b: b.status in active and b.heartbeat_at is not None and b.heartbeat_at < cutoff,
    )


def recover_orphaned_builds(db: Session, instance: Instance) -> int:
    """Requeue at once the builds of processes on this data dir that are certainly gone (provisioner/instance.py).

    Run at start (a server restarted after a crash takes its builds back before any agent of theirs reports)
    and on every reconciliation pass.
    """
    active = [BuildStatus.RUNNING, BuildStatus.CANCELING]
    claimed = db.execute(
        select(WorkspaceBuild.id, WorkspaceBuild.worker).where(
            WorkspaceBuild.status.in_(active), WorkspaceBuild.worker.is_not(None)
        )
    ).all()
    gone = [build_id for build_id, worker in claimed if instance.is_gone(worker)]
    return _requeue(
        db,
        gone,
        why="its process ended",
        still=lambda b: b.status in active and b.worker is not None and instance.is_gone(b.worker),
    )


def _requeue(db: Session, build_ids: list[str], *, why: str, still: Callable[[WorkspaceBuild], bool]) -> int:
    """Requeue (or fail, or finish canceling) each build that `still` qualifies, in a transaction of its own."""
    db.rollback()
    recovered = 0
    for build_id in build_ids:
        # One transaction per build: one that fails is logged and retried next pass, the others go on.
        try:
            build = db.get(WorkspaceBuild, build_id)
            if build is None or not still(build):
                continue
            _recover(build)
            db.commit()
        except Exception:
            # The outermost iteration over rows (see ttl.enforce_deadlines).
            db.rollback()
            log.exception("recovering a build failed", build=build_id)
            continue
        recovered += 1
        log.warning("recovered build", build=build.id, why=why, now=build.status, attempts=build.attempts)
        if build.status == BuildStatus.PENDING:
            queue.wakeup.notify()
            events.job_queued(db, build.id)
        events.changed(db, build.workspace_id)
    return recovered


def _recover(build: WorkspaceBuild) -> None:
    if build.cancel_requested:
        build.status, build.error = BuildStatus.CANCELED, "canceled (its worker stopped)"
        build.completed_at = utcnow()
    elif build.attempts >= MAX_ATTEMPTS:
        build.status = BuildStatus.FAILED
        build.error = f"the provisioner stopped responding {build.attempts} times; giving up"
        build.completed_at = utcnow()
    else:
        build.status, build.worker = BuildStatus.PENDING, None


def _running_workspaces(db: Session, *, finished_before: datetime) -> list[Workspace]:
    """Workspaces whose latest build is a start that succeeded before `finished_before`."""
    build = LATEST
    return list(
        db.scalars(
            select(Workspace)
            .join(build, ON_LATEST)
            .where(
                Workspace.deleted.is_(False),
                build.transition == Transition.START,
                build.status == BuildStatus.SUCCEEDED,
                build.completed_at < finished_before,
            )
        )
    )


def observe_drift(db: Session, runtime: Runtime) -> list[str]:
    """Record what the runtime says about workspaces Dockyard believes are running; returns drifted names."""
    # Only starts that finished before the snapshot was taken can be judged by it: a build finishing while
    # the runtime is being listed would otherwise be reported as drifted (for one pass) by a stale picture.
    now = utcnow()
    observations = runtime.observe_all()
    drifted = []
    for workspace in _running_workspaces(db, finished_before=now):
        observation = observations.get(workspace.id) or Observation(workspace.id, ContainerState.MISSING)
        name = workspace.name
        # One transaction per workspace: one that fails is logged and retried next pass, the others go on.
        try:
            if _record_drift(db, workspace, observation, now=now):
                drifted.append(name)
            db.commit()
        except Exception:
            # The outermost iteration over rows (see ttl.enforce_deadlines).
            db.rollback()
            log.exception("recording drift failed for one workspace", workspace=name)
    return drifted


def _record_drift(db: Session, workspace: Workspace, observation: Observation, *, now: datetime) -> bool:
    """Note what the runtime says of one workspace; True when it drifted."""
    reason = drift_reason(observation)
    if reason is None:
        if workspace.drift_state is not None:
            workspace.drift_state = workspace.drift_reason = workspace.drift_at = None
        return False
    if workspace.drift_state == observation.state.value:
        return True  # recorded by an earlier pass
    workspace.drift_state = observation.state.value
    workspace.drift_reason = reason
    workspace.drift_at = now
    build = db.scalar(
        select(WorkspaceBuild)
        .where(WorkspaceBuild.workspace_id == workspace.id)
        .order_by(WorkspaceBuild.number.desc())
        .limit(1)
    )
    log.warning("workspace drifted", workspace=workspace.name, state=observation.state.value, reason=reason)
    db.commit()
    if build is not None:
        logs.append_with(db, build.id, "reconcile", reason)
    events.changed(db, workspace.id)
    return True


def orphans(db: Session, runtime: Runtime) -> list[ManagedResource]:
    live = set(db.scalars(select(Workspace.id).where(Workspace.deleted.is_(False))))
    live |= warmnetworks.ids(db)  # networks made ahead of their workspaces
    # A workspace being deleted still owns its resources until the delete build finishes.
    return [r for r in runtime.managed_resources() if r.workspace_id not in live]
