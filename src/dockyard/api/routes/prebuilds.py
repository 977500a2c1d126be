"""Warm workspace pools (prebuilds): what each template's presets hold (warmpool/prebuilds.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from dockyard.accounts.actor import Actor
from dockyard.api.deps import DbSession, TemplateParam, scoped
from dockyard.warmpool import prebuilds
from dockyard_sdk import models as wire
from dockyard_sdk.models import Scope

router = APIRouter(tags=["prebuilds"])


@router.get("/api/v2/prebuilds")
def list_prebuilds(db: DbSession, actor: Annotated[Actor, scoped(Scope.TEMPLATE_READ)]) -> wire.PrebuildList:
    """Warm pool presets of the templates you may see: desired, ready, building and failed members."""
    return prebuilds.for_actor(db, actor)


@router.get("/api/v2/templates/{template}/prebuilds")
def template_prebuilds(
    db: DbSession, template: TemplateParam, actor: Annotated[Actor, scoped(Scope.TEMPLATE_READ)]
) -> wire.PrebuildList:
    """One template's warm pool presets."""
    return prebuilds.for_actor(db, actor, template=template)
