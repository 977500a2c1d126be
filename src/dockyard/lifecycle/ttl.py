"""Deadlines: a workspace past its TTL gets the template's on_ttl transition (stop, or delete for sandboxes)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard import logs as logging
from dockyard.errors import Conflict
from dockyard.provisioner import builds
from dockyard.sdk.manifest import OnTtl
from dockyard.sdk.models import BuildReason, Transition
from dockyard.store.models import TemplateVersion, Workspace
from dockyard.store.types import utcnow
from dockyard.templates import service as templates

log = logging.get(__name__)


def enforce_deadlines(db: Session) -> list[str]:
    """Queue stop/delete builds for workspaces past their deadline; returns their names."""
    due = db.scalars(
        select(Workspace).where(
            Workspace.deleted.is_(False), Workspace.deadline.is_not(None), Workspace.deadline <= utcnow()
        )
    ).all()
    acted = []
    for workspace in due:
        version = db.get(TemplateVersion, workspace.template_version_id)
        on_ttl = templates.version_to_wire(version).manifest.lifetime.on_ttl if version else OnTtl.STOP
        transition = Transition.DELETE if on_ttl == OnTtl.DELETE else Transition.STOP
        try:
            builds.create_build(db, workspace, transition, actor=None, reason=BuildReason.TTL)
        except Conflict:
            # A build is running (or it is already stopped); try again on the next pass.
            db.rollback()
            continue
        log.info("ttl reached", workspace=workspace.name, transition=transition.value)
        acted.append(workspace.name)
    return acted
