"""Users' registered SSH keys as stored: add, list, find, remove. Parsing a key and its fingerprint are the
gateway's (`gateway/keys.py`, where asyncssh stays)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dockyard.accounts.actor import Actor
from dockyard.errors import Conflict, Forbidden, NotFound, Validation
from dockyard.store import audit
from dockyard.store.models import SshKey as SshKey
from dockyard.store.models import User
from dockyard.store.types import utcnow
from dockyard_sdk import models as wire
from dockyard_sdk.models import Scope


def to_wire(row: SshKey) -> wire.SshKey:
    return wire.SshKey(
        id=row.id,
        name=row.name,
        fingerprint=row.fingerprint,
        public_key=row.public_key,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
    )


def require_manage(actor: Actor, user: User, scope: Scope) -> None:
    """Users manage their own keys; only an owner (`user:admin`) manages another user's."""
    actor.require(scope)
    if user.id != actor.user_id and not actor.can(Scope.USER_ADMIN):
        raise Forbidden("Only an owner can manage another user's SSH keys.")


def add(
    db: Session, actor: Actor, user: User, *, name: str, public_key: str, key_print: str, algorithm: str
) -> SshKey:
    """Register a key already parsed (`public_key` as an OpenSSH line, its fingerprint and algorithm)."""
    require_manage(actor, user, Scope.USER_WRITE)
    if db.scalar(select(SshKey.id).where(SshKey.fingerprint == key_print)) is not None:
        # Not saying whose: a key names its one owner, and that is nobody else's business.
        raise Conflict(
            "This SSH key is already registered.",
            detail="A key can belong to one user only; generate a new one with ssh-keygen.",
            validations=[Validation("public_key", f"{key_print} is already registered")],
        )
    if db.scalar(select(SshKey.id).where(SshKey.user_id == user.id, SshKey.name == name)):
        raise Conflict(
            f"An SSH key named {name!r} already exists.",
            validations=[Validation("name", f"{name!r} is taken")],
        )
    row = SshKey(user_id=user.id, name=name, public_key=public_key, fingerprint=key_print)
    db.add(row)
    try:
        db.flush()
    except IntegrityError as exc:
        # Two requests racing past the checks above: the unique indexes decide.
        db.rollback()
        raise Conflict("This SSH key or key name is already registered.") from exc
    audit.record(
        db,
        actor,
        "sshkey.create",
        resource_type="ssh_key",
        resource_id=row.id,
        resource_name=row.name,
        status_code=201,
        detail={"user": user.username, "fingerprint": key_print, "algorithm": algorithm},
    )
    db.commit()
    return row


def list_keys(db: Session, actor: Actor, user: User) -> list[SshKey]:
    require_manage(actor, user, Scope.USER_READ)
    return list(db.scalars(select(SshKey).where(SshKey.user_id == user.id).order_by(SshKey.created_at)))


def get(db: Session, user: User, ref: str) -> SshKey:
    """A key of `user` by id or name. (Not by fingerprint: its base64 holds `/`, which no path segment can.)"""
    row = db.scalar(
        select(SshKey).where(SshKey.user_id == user.id, (SshKey.id == ref) | (SshKey.name == ref))
    )
    if row is None:
        raise NotFound(f"SSH key {ref!r} not found.")
    return row


def remove(db: Session, actor: Actor, user: User, ref: str) -> None:
    require_manage(actor, user, Scope.USER_WRITE)
    row = get(db, user, ref)
    audit.record(
        db,
        actor,
        "sshkey.delete",
        resource_type="ssh_key",
        resource_id=row.id,
        resource_name=row.name,
        detail={"user": user.username, "fingerprint": row.fingerprint},
    )
    db.delete(row)
    db.commit()


def lookup_by_fingerprint(db: Session, fingerprint: str) -> tuple[SshKey, User] | None:
    """The registered key with this fingerprint and its user, or None."""
    found = db.execute(
        select(SshKey, User).join(User, User.id == SshKey.user_id).where(SshKey.fingerprint == fingerprint)
    ).first()
    return None if found is None else (found[0], found[1])


def mark_used(db: Session, key_id: str) -> None:
    row = db.get(SshKey, key_id)
    if row is not None:
        row.last_used_at = utcnow()
        db.commit()


def owner_active(db: Session, key_id: str) -> bool:
    """Whether the key is still registered and its user active."""
    found = db.execute(
        select(User.status).join(SshKey, SshKey.user_id == User.id).where(SshKey.id == key_id)
    ).first()
    return found is not None and found[0] == wire.UserStatus.ACTIVE
