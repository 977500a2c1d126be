"""A user's outgoing webhooks for task and workspace status changes (docs/AGENTS.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, status

from dockyard.accounts.actor import Actor
from dockyard.api.deps import DbSession, UserParam, scoped
from dockyard.webhooks import service
from dockyard_sdk import models as wire
from dockyard_sdk.models import Scope

router = APIRouter(prefix="/api/v2/users/{user}/webhooks", tags=["webhooks"])
WebhookRef = Annotated[str, Path(description="The webhook's id.", max_length=64)]


@router.get("")
def list_webhooks(
    user: UserParam, db: DbSession, actor: Annotated[Actor, scoped(Scope.USER_READ)]
) -> list[wire.Webhook]:
    """The user's webhooks and how their deliveries go, without their secrets."""
    return [service.to_wire(row) for row in service.list_webhooks(db, actor, user)]


@router.post("", status_code=status.HTTP_201_CREATED)
def add_webhook(
    body: wire.CreateWebhookRequest,
    user: UserParam,
    db: DbSession,
    actor: Annotated[Actor, scoped(Scope.USER_WRITE)],
    request: Request,
) -> wire.CreatedWebhook:
    """Post task and workspace status changes of the user's workspaces to a URL, signed with HMAC-SHA256.
    The secret is shown only in this response. The server does not post to link-local addresses (cloud
    metadata) or to the ranges its operator denies (`--outbound-deny`)."""
    row, secret = service.add(db, actor, user, body, request.app.state.settings.outbound)
    return wire.CreatedWebhook(**service.to_wire(row).model_dump(), secret=secret)


@router.delete("/{webhook}", status_code=status.HTTP_204_NO_CONTENT)
def remove_webhook(
    user: UserParam, webhook: WebhookRef, db: DbSession, actor: Annotated[Actor, scoped(Scope.USER_WRITE)]
) -> None:
    """Stop posting to this webhook."""
    service.remove(db, actor, user, webhook)
