"""Moving a running workspace's deadline (`PUT /workspaces/{id}/ttl`, `dockyard extend`), within the template's
`lifetime.max_ttl`."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from dockyard.accounts.actor import Actor
from dockyard.errors import Conflict, ValidationFailed
from dockyard.provisioner import builds, lifetimes
from dockyard.provisioner.plans import render_for
from dockyard.store import audit
from dockyard.store.models import TemplateVersion, User, Workspace
from dockyard.store.types import utcnow
from dockyard.templates import service as templates
from dockyard.workspaces import service as workspaces
from dockyard_sdk import models as wire


def set_ttl(db: Session, actor: Actor, workspace: Workspace, seconds: int | None) -> workspaces.Loaded:
    """Set the TTL; a running workspace's deadline moves to `seconds` from now, with no build and no restart.

    A stopped workspace keeps the new TTL for its next start. Nothing is restarted, so SSH sessions, terminals
    and a coding agent's task carry on across an extension.
    """
    current = builds.latest(db, workspace)
    if workspace.deleted or current.transition == wire.Transition.DELETE.value:
        raise Conflict(f"Workspace {workspace.name!r} is being deleted; its TTL cannot change.")
    version = db.get(TemplateVersion, workspace.template_version_id)
    if version is not None:
        owner = db.get(User, workspace.owner_id)
        assert owner is not None
        manifest = render_for(
            templates.version_to_wire(version).manifest,
            workspace.parameters,
            workspace=workspace,
            owner=owner,
        )
        problems = lifetimes.check_max_ttl(manifest, seconds, field="ttl")
        if problems:
            raise ValidationFailed("The TTL is longer than the template allows.", problems)
    before = workspace.deadline
    workspace.ttl_seconds = seconds
    if current.transition == wire.Transition.START.value and current.status in (
        wire.BuildStatus.PENDING,
        wire.BuildStatus.RUNNING,
        wire.BuildStatus.SUCCEEDED,
    ):
        workspace.deadline = utcnow() + timedelta(seconds=seconds) if seconds else None
    audit.record(
        db,
        actor,
        "workspace.ttl",
        resource_type="workspace",
        resource_id=workspace.id,
        resource_name=workspace.name,
        detail={
            "ttl_seconds": seconds,
            "deadline_before": before.isoformat() if before else None,
            "deadline": workspace.deadline.isoformat() if workspace.deadline else None,
        },
    )
    db.commit()
    return workspaces.Loaded(workspace, current)
