"""Which workspace and app a request names, and whether its visitor may open it (the app's share level).

`owner` (the default, and always for raw ports): the workspace's owner and deployment owners, with a
credential that has `workspace:connect` and an allow-list that covers the workspace, exactly who may open its
terminal. `authenticated`: any signed-in user. `public`: anyone, no login.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.accounts.actor import Actor
from dockyard.apps.routing import Target
from dockyard.errors import NotFound, Unauthorized
from dockyard.provisioner import builds, devcontainer_image
from dockyard.provisioner.plans import render_for
from dockyard.store.models import TemplateVersion, User, Workspace, WorkspaceBuild
from dockyard.templates import devcontainers
from dockyard.templates import service as templates
from dockyard.workspaces import service as workspaces
from dockyard_sdk.manifest import App, AppShare
from dockyard_sdk.models import Scope


@dataclass(frozen=True)
class Resolved:
    workspace_id: str
    workspace_name: str
    owner_id: str
    owner_name: str
    port: int
    share: AppShare
    app: App | None


_cache: dict[str, tuple[App, ...]] = {}


def apps_of(db: Session, workspace: Workspace) -> tuple[App, ...]:
    """The apps of the workspace's latest start build, rendered with its parameters.

    A build's rendered manifest never changes, so it is kept per build id (a bounded dictionary).
    """
    build = builds.latest_start(db, workspace.id)
    if build is None:
        return ()
    return _apps_of_build(db, workspace, build)


def apps_of_many(db: Session, workspace_ids: Sequence[str]) -> dict[str, tuple[App, ...]]:
    """`apps_of` for many workspaces (those with a start build), in one statement once their builds' apps are
    known: the health checker asks for every connected workspace every second."""
    found = {}
    for workspace_id, build_id in builds.latest_start_ids(db, workspace_ids).items():
        known = _cache.get(build_id)
        if known is None:
            workspace, build = db.get(Workspace, workspace_id), db.get(WorkspaceBuild, build_id)
            if workspace is None or build is None:
                continue
            known = _apps_of_build(db, workspace, build)
        found[workspace_id] = known
    return found


def _apps_of_build(db: Session, workspace: Workspace, build: WorkspaceBuild) -> tuple[App, ...]:
    known = _cache.get(build.id)
    if known is not None:
        return known
    version = db.get(TemplateVersion, build.template_version_id)
    owner = db.get(User, workspace.owner_id)
    if version is None or owner is None:
        return ()
    manifest = templates.version_to_wire(version).manifest
    # A dev container's forwarded ports are apps too (provisioner/devcontainer_image.py).
    devcontainer = devcontainers.plan_for(db, version)
    if not manifest.apps and (devcontainer is None or not devcontainer.ports):
        rendered: tuple[App, ...] = ()
    else:
        full = render_for(manifest, build.parameters, workspace=workspace, owner=owner)
        if devcontainer is not None:
            full = devcontainer_image.apply(devcontainer, full)
        rendered = tuple(full.apps)
    if len(_cache) > 4096:
        _cache.clear()
    _cache[build.id] = rendered
    return rendered


def resolve(db: Session, target: Target) -> Resolved:
    """The workspace and app (or port) a target names; 404 naming what is missing."""
    owner = db.scalar(select(User).where(User.username == target.owner))
    if owner is None and target.subdomain:
        # Host names are lower case; usernames may not be.
        owner = db.scalar(select(User).where(User.username.ilike(target.owner)))
    what = f"{target.owner}/{target.workspace}"
    if owner is None:
        raise NotFound(f"Workspace {what} not found.")
    query = select(Workspace).where(Workspace.owner_id == owner.id, Workspace.deleted.is_(False))
    workspace = db.scalar(query.where(Workspace.name == target.workspace))
    if workspace is None and target.subdomain:
        workspace = db.scalar(query.where(Workspace.name.ilike(target.workspace)))
    if workspace is None:
        raise NotFound(f"Workspace {what} not found.")
    if target.port is not None:
        return Resolved(
            workspace.id, workspace.name, owner.id, owner.username, target.port, AppShare.OWNER, None
        )
    for app in apps_of(db, workspace):
        if app.slug == target.slug or (target.subdomain and app.slug.lower() == target.slug):
            return Resolved(workspace.id, workspace.name, owner.id, owner.username, app.port, app.share, app)
    raise NotFound(f"Workspace {what} has no app {target.slug!r}.")


def authorize(db: Session, actor: Actor | None, resolved: Resolved) -> None:
    """Raise Unauthorized (log in) or NotFound (not yours: unseen means 404) unless the visitor may open it."""
    if resolved.share == AppShare.PUBLIC:
        return
    if actor is None:
        raise Unauthorized("Log in to open this app.", detail=f"Its share level is {resolved.share.value}.")
    if resolved.share == AppShare.AUTHENTICATED:
        return
    workspace = db.get(Workspace, resolved.workspace_id)
    if (
        workspace is None
        or not workspaces.visible(db, actor, workspace.id)
        or not actor.can(Scope.WORKSPACE_CONNECT)
    ):
        raise NotFound(f"Workspace {resolved.owner_name}/{resolved.workspace_name} not found.")
