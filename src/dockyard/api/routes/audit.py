from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from dockyard.accounts.actor import Actor
from dockyard.api.deps import DbSession, scoped
from dockyard.api.paging import Limit, Offset
from dockyard.errors import Validation, ValidationFailed
from dockyard.store import audit
from dockyard_sdk import models as wire
from dockyard_sdk.models import Scope

router = APIRouter(prefix="/api/v2/audit", tags=["audit"])


def _utc(field: str, value: datetime | None) -> datetime | None:
    """Times without a zone are read as UTC; ones that cannot be expressed in UTC are refused."""
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise ValidationFailed("Invalid time.", [Validation(field, "is out of range")]) from exc


@router.get("")
def search_audit(
    db: DbSession,
    actor: Annotated[Actor, scoped(Scope.AUDIT_READ)],
    user: Annotated[str | None, Query(max_length=64, description="User name or id.")] = None,
    action: Annotated[
        str | None, Query(max_length=64, description="e.g. template.create, or template. for all.")
    ] = None,
    resource_type: Annotated[str | None, Query(max_length=32)] = None,
    resource: Annotated[str | None, Query(max_length=64, description="Resource id or name.")] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> wire.AuditLogList:
    """Audit log entries, newest first, filtered by user, action, resource or time (owners only)."""
    rows, count = audit.search(
        db,
        user=user,
        action=action,
        resource_type=resource_type,
        resource=resource,
        since=_utc("since", since),
        until=_utc("until", until),
        limit=limit,
        offset=offset,
    )
    return wire.AuditLogList(
        audit_logs=[
            wire.AuditLog(
                id=r.id,
                time=r.time,
                user_id=r.user_id,
                username=r.username,
                action=r.action,
                resource_type=r.resource_type,
                resource_id=r.resource_id,
                resource_name=r.resource_name,
                ip=r.ip,
                status_code=r.status_code,
                detail=r.detail,
            )
            for r in rows
        ],
        count=count,
    )
