"""Audit rows: one per state change, written in the same transaction as the change."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.store import paging
from dockyard.store.models import AuditLog


class Actor(Protocol):
    """Who did it: `accounts.actor.Actor` is one (the store does not import the services above it)."""

    @property
    def user_id(self) -> str: ...

    @property
    def username(self) -> str: ...

    @property
    def ip(self) -> str: ...


RESOURCE_NAME_MAX = 128


def record(
    db: Session,
    actor: Actor,
    action: str,
    *,
    resource_type: str,
    resource_id: str = "",
    resource_name: str = "",
    status_code: int = 200,
    detail: dict[str, Any] | None = None,
) -> AuditLog:
    row = AuditLog(
        user_id=actor.user_id or None,
        username=actor.username,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        # Names the audit row shows (a git host, a webhook URL) may be longer than the column; the full value,
        # where it matters, is in `detail`.
        resource_name=resource_name[:RESOURCE_NAME_MAX],
        ip=actor.ip,
        status_code=status_code,
        detail=detail or {},
    )
    db.add(row)
    return row


def search(
    db: Session,
    *,
    user: str | None = None,
    action: str | None = None,
    resource_type: str | None = None,
    resource: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[AuditLog], int]:
    query = select(AuditLog)
    if user:
        query = query.where((AuditLog.username == user) | (AuditLog.user_id == user))
    if action:
        # "template." matches every template action; anything else must match exactly.
        query = query.where(
            AuditLog.action.startswith(action) if action.endswith(".") else AuditLog.action == action
        )
    if resource_type:
        query = query.where(AuditLog.resource_type == resource_type)
    if resource:
        query = query.where((AuditLog.resource_id == resource) | (AuditLog.resource_name == resource))
    if since:
        query = query.where(AuditLog.time >= since)
    if until:
        query = query.where(AuditLog.time < until)
    return paging.newest_first(db, query, AuditLog.id, limit=limit, offset=offset)
