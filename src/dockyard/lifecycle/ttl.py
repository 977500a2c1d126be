"""Deadlines: a workspace past its TTL gets the template's on_ttl transition (stop, or delete for sandboxes)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard import logs as logging
from dockyard.errors import Conflict
from dockyard.provisioner import builds
from dockyard.store.models import TemplateVersion, Workspace
from dockyard.store.types import utcnow
from dockyard.templates import service as templates
from dockyard_sdk.manifest import OnTtl
from dockyard_sdk.models import BuildReason, Transition

log = logging.get(__name__)


def enforce_deadlines(db: Session) -> list[str]:
    """Queue stop/delete builds for workspaces past their deadline; returns their names.

    Each workspace is its own transaction: one that fails (a user's start racing this pass for the next build
    number, a template version that no longer parses) is logged and left for the next pass, and the others
    are still handled.
    """
    due = db.execute(
        select(Workspace.id, Workspace.name).where(
            Workspace.deleted.is_(False), Workspace.deadline.is_not(None), Workspace.deadline <= utcnow()
        )
    ).all()
    db.rollback()
    acted = []
    for workspace_id, name in due:
        try:
            transition = _expire(db, workspace_id)
        except Conflict:
            # A build is running (or it is already stopped); try again on the next pass.
            db.rollback()
            continue
        except Exception:
            # The outermost iteration over rows: whatever one workspace raises must not cost the others
            # their deadline (the error is logged with its traceback, and the row is retried next pass).
            db.rollback()
            log.exception("ttl pass failed for one workspace", workspace=name)
            continue
        if transition is not None:
            log.info("ttl reached", workspace=name, transition=transition.value)
            acted.append(name)
    return acted


def _expire(db: Session, workspace_id: str) -> Transition | None:
    workspace = db.get(Workspace, workspace_id)
    # Re-read: a user may have extended, started or deleted it since the pass listed it.
    if workspace is None or workspace.deleted or workspace.deadline is None or workspace.deadline > utcnow():
        return None
    version = db.get(TemplateVersion, workspace.template_version_id)
    on_ttl = templates.version_to_wire(version).manifest.lifetime.on_ttl if version else OnTtl.STOP
    transition = Transition.DELETE if on_ttl == OnTtl.DELETE else Transition.STOP
    builds.create_build(db, workspace, transition, actor=None, reason=BuildReason.TTL)
    return transition
