"""A workspace's apps: where to open them and whether they are healthy."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request

from dockyard.accounts.actor import Actor
from dockyard.api.deps import DbSession, WorkspaceParam, scoped
from dockyard.apps import service
from dockyard_sdk import models as wire
from dockyard_sdk.models import Scope

router = APIRouter(tags=["apps"])


def base_url(request: Request) -> str:
    configured: str = request.app.state.settings.access_url
    return configured.rstrip("/") if configured else str(request.base_url).rstrip("/")


@router.get("/api/v2/workspaces/{workspace}/apps")
def list_apps(
    request: Request,
    db: DbSession,
    workspace: WorkspaceParam,
    actor: Annotated[Actor, scoped(Scope.WORKSPACE_READ)],
) -> wire.WorkspaceApps:
    """The template's apps of this workspace with their URLs and health (health is checked by the server
    that holds the workspace's agent connection)."""
    apps = service.list_apps(
        db,
        workspace,
        base_url=base_url(request),
        wildcard=request.app.state.apps_wildcard,
        checker=getattr(request.app.state, "apps_health", None),
    )
    return wire.WorkspaceApps(apps=apps)
