"""Adding, listing and removing a user's webhooks."""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.accounts.actor import Actor
from dockyard.errors import Forbidden, NotFound
from dockyard.store import audit
from dockyard.store.models import User, Webhook
from dockyard_sdk import models as wire
from dockyard_sdk.models import Scope

# A user's endpoints each get every event; more than this is a mistake, not a use.
MAX_PER_USER = 20


def to_wire(row: Webhook) -> wire.Webhook:
    return wire.Webhook(
        id=row.id,
        url=row.url,
        status=wire.WebhookStatus(row.status),
        consecutive_failures=row.consecutive_failures,
        last_error=row.last_error,
        last_delivery_at=row.last_delivery_at,
        created_at=row.created_at,
    )


def _require_manage(actor: Actor, user: User, scope: Scope) -> None:
    actor.require(scope)
    if user.id != actor.user_id and not actor.can(Scope.USER_ADMIN):
        raise Forbidden("Only an owner can manage another user's webhooks.")


def add(db: Session, actor: Actor, user: User, request: wire.CreateWebhookRequest) -> tuple[Webhook, str]:
    """A new webhook and its signing secret (made here unless given)."""
    _require_manage(actor, user, Scope.USER_WRITE)
    count = len(list(db.scalars(select(Webhook.id).where(Webhook.user_id == user.id))))
    if count >= MAX_PER_USER:
        raise Forbidden(f"A user can have at most {MAX_PER_USER} webhooks; remove one first.")
    secret = request.secret or "whsec_" + secrets.token_urlsafe(32)
    row = Webhook(user_id=user.id, url=request.url, secret=secret, status="active", consecutive_failures=0)
    db.add(row)
    db.flush()
    audit.record(
        db,
        actor,
        "webhook.create",
        resource_type="webhook",
        resource_id=row.id,
        resource_name=row.url,
        status_code=201,
        detail={"user": user.username, "url": row.url},
    )
    db.commit()
    return row, secret


def list_webhooks(db: Session, actor: Actor, user: User) -> list[Webhook]:
    _require_manage(actor, user, Scope.USER_READ)
    return list(db.scalars(select(Webhook).where(Webhook.user_id == user.id).order_by(Webhook.created_at)))


def remove(db: Session, actor: Actor, user: User, webhook_id: str) -> None:
    _require_manage(actor, user, Scope.USER_WRITE)
    row = db.scalar(select(Webhook).where(Webhook.user_id == user.id, Webhook.id == webhook_id))
    if row is None:
        raise NotFound(f"Webhook {webhook_id!r} not found.")
    audit.record(
        db,
        actor,
        "webhook.delete",
        resource_type="webhook",
        resource_id=row.id,
        resource_name=row.url,
        detail={"user": user.username, "url": row.url},
    )
    db.delete(row)
    db.commit()
