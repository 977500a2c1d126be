"""A workspace's egress log: what its allow-list let through and what it refused."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from dockyard.accounts.actor import Actor
from dockyard.api.deps import DbSession, WorkspaceParam, scoped
from dockyard.egress import service as egress
from dockyard_sdk import models as wire
from dockyard_sdk.models import Scope

router = APIRouter(tags=["workspaces"])


@router.get("/api/v2/workspaces/{workspace}/egress")
def list_egress_events(
    workspace: WorkspaceParam,
    db: DbSession,
    actor: Annotated[Actor, scoped(Scope.WORKSPACE_READ)],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> wire.EgressEventList:
    """Connections and DNS questions of an `allowlist` workspace through the egress proxy, newest first."""
    return egress.events(db, workspace, limit=limit, offset=offset)
