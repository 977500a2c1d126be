"""A workspace's egress log: what its allow-list let through and what it refused."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from dockyard.accounts.actor import Actor
from dockyard.api.deps import DbSession, WorkspaceParam, scoped
from dockyard.api.paging import Limit, Offset
from dockyard.egress import service as egress
from dockyard_sdk import models as wire
from dockyard_sdk.models import Scope

router = APIRouter(tags=["workspaces"])


@router.get("/api/v2/workspaces/{workspace}/egress")
def list_egress_events(
    workspace: WorkspaceParam,
    db: DbSession,
    actor: Annotated[Actor, scoped(Scope.WORKSPACE_READ)],
    limit: Limit = 100,
    offset: Offset = 0,
) -> wire.EgressEventList:
    """Connections and DNS questions of an `allowlist` workspace through the egress proxy, newest first."""
    return egress.events(db, workspace, limit=limit, offset=offset)
