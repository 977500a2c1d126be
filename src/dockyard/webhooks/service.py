"""Adding, listing and removing a user's webhooks."""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from sqlalchemy import ColumnElement, select, true
from sqlalchemy.orm import Session

from dockyard.accounts.actor import Actor
from dockyard.errors import Forbidden, NotFound, Validation, ValidationFailed
from dockyard.outbound import OutboundPolicy
from dockyard.store import audit
from dockyard.store.models import ApiToken, User, Webhook
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
        token_id=row.token_id,
    )


def _require_manage(actor: Actor, user: User, scope: Scope) -> None:
    actor.require(scope)
    if user.id != actor.user_id and not actor.can(Scope.USER_ADMIN):
        raise Forbidden("Only an owner can manage another user's webhooks.")


def add(
    db: Session, actor: Actor, user: User, request: wire.CreateWebhookRequest, outbound: OutboundPolicy
) -> tuple[Webhook, str]:
    """A new webhook and its signing secret (made here unless given)."""
    _require_manage(actor, user, Scope.USER_WRITE)
    # An address is refused now; a name is checked at each delivery (it may resolve elsewhere by then).
    refusal = outbound.literal_refusal(urlsplit(request.url).hostname or "")
    if refusal is not None:
        raise ValidationFailed("Invalid webhook.", [Validation("url", refusal)])
    count = len(list(db.scalars(select(Webhook.id).where(Webhook.user_id == user.id))))
    if count >= MAX_PER_USER:
        raise Forbidden(f"A user can have at most {MAX_PER_USER} webhooks; remove one first.")
    token_id = _token(db, actor, user, request.token)
    secret = request.secret or "whsec_" + secrets.token_urlsafe(32)
    row = Webhook(
        user_id=user.id,
        url=request.url,
        secret=secret,
        status="active",
        consecutive_failures=0,
        token_id=token_id,
    )
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
        detail={"user": user.username, "url": row.url, "token": token_id},
    )
    db.commit()
    return row, secret


def _token(db: Session, actor: Actor, user: User, wanted: str | None) -> str | None:
    """The id of the token a new webhook belongs to, if any. A token that sees only its own workspaces gets
    only its own webhooks: a webhook for all of its user's workspaces would tell it of the others."""
    if wanted is None:
        return actor.token_id if actor.own_workspaces_only else None
    token = db.scalar(
        select(ApiToken).where(
            ApiToken.user_id == user.id, (ApiToken.id == wanted) | (ApiToken.name == wanted)
        )
    )
    if token is None:
        raise ValidationFailed(
            "Invalid webhook.", [Validation("token", f"{user.username} has no token {wanted!r}")]
        )
    if actor.own_workspaces_only and token.id != actor.token_id:
        raise Forbidden(
            "A token that sees only its own workspaces can add webhooks only for itself.",
            validations=[Validation("token", "must be this token (or left out)")],
        )
    return token.id


def _visible(actor: Actor) -> ColumnElement[bool]:
    return Webhook.token_id == actor.token_id if actor.own_workspaces_only else true()


def list_webhooks(db: Session, actor: Actor, user: User) -> list[Webhook]:
    _require_manage(actor, user, Scope.USER_READ)
    return list(
        db.scalars(
            select(Webhook).where(Webhook.user_id == user.id, _visible(actor)).order_by(Webhook.created_at)
        )
    )


def remove(db: Session, actor: Actor, user: User, webhook_id: str) -> None:
    _require_manage(actor, user, Scope.USER_WRITE)
    row = db.scalar(
        select(Webhook).where(Webhook.user_id == user.id, Webhook.id == webhook_id, _visible(actor))
    )
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
