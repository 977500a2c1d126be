"""`Idempotency-Key` on workspace create, after Stripe: the same key with the same body returns the workspace the
first request made (never a second one); the same key with another body is refused (422).

Keys are per user, so a retry with a fresh session token of the same user still finds its workspace. The
unique (user_id, key) pair, inserted in the create's own transaction, is what stops concurrent retries from
making two workspaces: the loser's commit fails and it answers with the winner's workspace.

Keys are kept for a day, as Stripe keeps them: long enough for any client's retries, and the table does not grow
with every create ever made. The lifecycle loop deletes older ones (`expire`), and a replay ignores them meanwhile.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from dockyard.accounts.actor import Actor
from dockyard.errors import Validation, ValidationFailed
from dockyard.store.models import IdempotencyKey, Workspace
from dockyard.store.types import utcnow
from dockyard_sdk import models as wire

HEADER = "Idempotency-Key"
MAX_LENGTH = 255
KEPT_FOR = timedelta(hours=24)


@dataclass(frozen=True)
class Claim:
    user_id: str
    key: str
    request_hash: str


def claim(actor: Actor, key: str, request: wire.CreateWorkspaceRequest) -> Claim:
    if not key or len(key) > MAX_LENGTH or not key.isprintable():
        raise ValidationFailed(
            "Invalid Idempotency-Key.",
            [Validation(HEADER, f"must be 1 to {MAX_LENGTH} printable characters")],
        )
    body = json.dumps(request.model_dump(mode="json", exclude_unset=True), sort_keys=True)
    return Claim(actor.user_id, key, hashlib.sha256(body.encode()).hexdigest())


def replay(db: Session, found: Claim) -> Workspace | None:
    """The workspace an earlier request with this key made; 422 when that request had another body."""
    row = db.scalar(
        select(IdempotencyKey).where(IdempotencyKey.user_id == found.user_id, IdempotencyKey.key == found.key)
    )
    if row is None:
        return None
    if row.created_at <= utcnow() - KEPT_FOR:
        # Expired: the key is free again, as if the sweep had already run.
        db.delete(row)
        db.flush()
        return None
    if row.request_hash != found.request_hash:
        raise ValidationFailed(
            "This Idempotency-Key was used with a different request.",
            [Validation(HEADER, f"{found.key!r} was first used with another body; use a new key")],
        )
    return db.get(Workspace, row.workspace_id)


def record(db: Session, found: Claim, *, workspace_id: str) -> None:
    db.add(
        IdempotencyKey(
            user_id=found.user_id, key=found.key, request_hash=found.request_hash, workspace_id=workspace_id
        )
    )


def expire(db: Session, *, kept_for: timedelta = KEPT_FOR) -> int:
    """Delete keys older than `kept_for`; returns how many went."""
    result = db.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at <= utcnow() - kept_for))
    db.commit()
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
