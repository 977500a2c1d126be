"""Idle auto-stop, and the warning before any automatic stop.

A running workspace with `lifetime.idle_timeout` that nothing has used for that long gets a `stop` build
(reason `idle`). Before it (and before a TTL deadline) the pass marks the coming stop as warned, which the
watch stream sends as an `event: warning`. What counts as use is decided in provisioner/lifetimes.py.
"""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from dockyard import logs as logging
from dockyard.errors import Conflict
from dockyard.provisioner import builds, events, lifetimes
from dockyard.provisioner.builds import latest_or_none
from dockyard.store.models import Workspace
from dockyard.store.types import utcnow
from dockyard_sdk.models import BuildReason, Transition

log = logging.get(__name__)


def enforce_idle(db: Session) -> dict[str, str]:
    """Stop idle workspaces and warn of coming stops; returns {workspace name: "stopped" | "warned"}.

    Each workspace is its own transaction, as in ttl.py: one that fails is logged and retried next pass.
    """
    candidates = db.execute(
        select(Workspace.id, Workspace.name).where(
            Workspace.deleted.is_(False),
            or_(Workspace.idle_timeout_seconds.is_not(None), Workspace.deadline.is_not(None)),
        )
    ).all()
    db.rollback()
    acted: dict[str, str] = {}
    for workspace_id, name in candidates:
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


def _check(db: Session, workspace_id: str) -> str | None:
    workspace = db.get(Workspace, workspace_id)
    if workspace is None:
        return None
    build = latest_or_none(db, workspace)
    now = utcnow()
    plan = lifetimes.plan(workspace, build, now) if build is not None else None
    if plan is None:
        db.rollback()
        return None
    if plan.stop_reason == "idle" and plan.idle_stop_at is not None and plan.idle_stop_at <= now:
        builds.create_build(db, workspace, Transition.STOP, actor=None, reason=BuildReason.IDLE)
        return "stopped"
    if plan.warn_from is not None and plan.warn_from <= now and not plan.warned(workspace):
        workspace.stop_warned_for = plan.stops_at
        db.commit()
        events.changed(db, workspace.id)
        return "warned"
    db.rollback()
    return None
