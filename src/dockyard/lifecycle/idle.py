"""Idle auto-stop, and the warning before any automatic stop.

A running workspace with `lifetime.idle_timeout` that nothing has used for that long gets a `stop` build
(reason `idle`). Before it (and before a TTL deadline) the pass marks the coming stop as warned, which the
watch stream sends as an `event: warning`. What counts as use is decided in provisioner/lifetimes.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from dockyard import logs as logging
from dockyard.errors import Conflict
from dockyard.provisioner import builds, events, lifetimes
from dockyard.provisioner.builds import latest_or_none
from dockyard.store.models import Workspace, WorkspaceBuild
from dockyard.store.types import utcnow
from dockyard.workspaces.status import LATEST, ON_LATEST
from dockyard_sdk.models import BuildReason, Transition

log = logging.get(__name__)


def enforce_idle(db: Session) -> dict[str, str]:
    """Stop idle workspaces and warn of coming stops; returns {workspace name: "stopped" | "warned"}.

    One read finds what is due: the pass runs every few seconds over every workspace with a lifetime, and two
    statements per workspace were a fleet's largest share of the server's SQL. Each workspace found is then
    its own transaction, as in ttl.py: one that fails is logged and retried next pass.
    """
    build = LATEST
    now = utcnow()
    due = [
        (workspace.id, workspace.name)
        for workspace, latest in db.execute(
            select(Workspace, build)
            .join(build, ON_LATEST)
            .where(
                Workspace.deleted.is_(False),
                or_(Workspace.idle_timeout_seconds.is_not(None), Workspace.deadline.is_not(None)),
            )
        ).tuples()
        if _worth_a_look(workspace, latest, now)
    ]
    db.rollback()
    acted: dict[str, str] = {}
    for workspace_id, name in due:
        try:
            outcome = _check(db, workspace_id)
        except Conflict:
            # A build started meanwhile (a user's start or stop): the next pass sees the new state.
            db.rollback()
            continue
        except Exception:
            # The outermost iteration over rows: one workspace's error must not cost the others their stop.
            db.rollback()
            log.exception("idle pass failed for one workspace", workspace=name)
            continue
        if outcome:
            log.info("idle pass", workspace=name, outcome=outcome)
            acted[name] = outcome
    return acted


def _worth_a_look(workspace: Workspace, build: WorkspaceBuild, now: datetime) -> bool:
    try:
        return _due(workspace, lifetimes.plan(workspace, build, now), now) is not None
    except Exception:  # noqa: BLE001 - looked at alone, in its own transaction, where its error is logged
        return True


def _due(workspace: Workspace, plan: lifetimes.Plan | None, now: datetime) -> Literal["stop", "warn"] | None:
    if plan is None:
        return None
    if plan.stop_reason == "idle" and plan.idle_stop_at is not None and plan.idle_stop_at <= now:
        return "stop"
    if plan.warn_from is not None and plan.warn_from <= now and not plan.warned(workspace):
        return "warn"
    return None


def _check(db: Session, workspace_id: str) -> str | None:
    # Read again in its own transaction: a user may have used, extended or stopped it since the pass read it.
    workspace = db.get(Workspace, workspace_id)
    if workspace is None:
        return None
    build = latest_or_none(db, workspace)
    now = utcnow()
    plan = lifetimes.plan(workspace, build, now) if build is not None else None
    due = _due(workspace, plan, now)
    if due == "stop":
        builds.create_build(db, workspace, Transition.STOP, actor=None, reason=BuildReason.IDLE)
        return "stopped"
    if due == "warn" and plan is not None:
        workspace.stop_warned_for = plan.stops_at
        db.commit()
        events.changed(db, workspace.id)
        return "warned"
    db.rollback()
    return None
