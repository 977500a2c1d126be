"""A workspace's apps as the API and dashboard show them: URLs and health."""

from __future__ import annotations

from sqlalchemy.orm import Session

from dockyard.apps import access
from dockyard.apps.health import HealthChecker
from dockyard.apps.routing import Wildcard, path_url
from dockyard.store.models import User, Workspace
from dockyard_sdk import models as wire


def list_apps(
    db: Session,
    workspace: Workspace,
    *,
    base_url: str,
    wildcard: Wildcard | None,
    checker: HealthChecker | None,
) -> list[wire.WorkspaceApp]:
    owner = db.get(User, workspace.owner_id)
    owner_name = owner.username if owner is not None else ""
    listed = []
    for app in access.apps_of(db, workspace):
        path = path_url(base_url, owner_name, workspace.name, slug=app.slug)
        own = wildcard.origin(app.slug, workspace.name, owner_name) + "/" if wildcard is not None else None
        health = checker.health(workspace.id, app) if checker is not None else None
        listed.append(
            wire.WorkspaceApp(
                slug=app.slug,
                display_name=app.display_name or app.slug,
                port=app.port,
                share=app.share.value,
                subdomain=app.subdomain,
                url=own if own is not None and app.subdomain else path,
                path_url=path,
                subdomain_url=own,
                health=health.state
                if health is not None
                else ("disabled" if app.healthcheck is None else "unknown"),
                health_detail=health.detail if health is not None else "",
            )
        )
    return listed
