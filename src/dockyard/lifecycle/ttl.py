"""Deadlines: a workspace past its TTL gets the template's on_ttl transition (stop, or delete for sandboxes),
unless its task still reports `working` (provisioner/lifetimes.ttl_held): a TTL never stops an agent mid-task."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard import logs as logging
from dockyard.errors import Conflict
from dockyard.provisioner import builds, lifetimes
from dockyard.provisioner.plans import render_for
from dockyard.store.models import TemplateVersion, User, Workspace, WorkspaceAgent
from dockyard.store.types import utcnow
from dockyard.templates import service as templates
from dockyard_sdk.manifest import OnTtl, TemplateManifest
from dockyard_sdk.models import AgentConnection, BuildReason, TaskState, Transition

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
    manifest = templates.version_to_wire(version).manifest if version else None
    if _held(db, workspace, manifest):
        db.rollback()
        return None
    on_ttl = manifest.lifetime.on_ttl if manifest is not None else OnTtl.STOP
    transition = Transition.DELETE if on_ttl == OnTtl.DELETE else Transition.STOP
    builds.create_build(db, workspace, transition, actor=None, reason=BuildReason.TTL)
    return transition


def _held(db: Session, workspace: Workspace, manifest: TemplateManifest | None) -> bool:
    if workspace.task_state != TaskState.WORKING.value:
        return False
    agent = db.get(WorkspaceAgent, workspace.id)
    connected = agent is not None and agent.connection == AgentConnection.CONNECTED.value
    max_ttl = None
    if manifest is not None and manifest.lifetime.max_ttl:
        owner = db.get(User, workspace.owner_id)
        assert owner is not None
        # `max_ttl` may name parameters, as `ttl` does: rendered for this workspace, as an extension renders it.
        rendered = render_for(manifest, workspace.parameters, workspace=workspace, owner=owner)
        max_ttl = lifetimes.max_ttl_seconds(rendered)
    return lifetimes.ttl_held(workspace, utcnow(), max_ttl=max_ttl, agent_connected=connected)
