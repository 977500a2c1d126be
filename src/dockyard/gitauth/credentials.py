"""Users' git credentials: stored encrypted, listed without their secrets, released to agents.

The secret is encrypted (Fernet: AES-128-CBC with HMAC-SHA256) with a key of the deployment (`store/keys.py`,
`git-credentials-key`), so a copy of the `git_credentials` table alone (a partial dump, a log of a query) does
not show it; the key lives in the same database, so a full copy of the database does.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dockyard.accounts.actor import Actor
from dockyard.errors import Conflict, Forbidden, NotFound
from dockyard.store import audit, keys
from dockyard.store.models import GitCredential, User
from dockyard.store.types import utcnow
from dockyard_sdk import models as wire
from dockyard_sdk.models import Scope

KEY_NAME = "git-credentials-key"


def _fernet(db: Session) -> Fernet:
    return Fernet(keys.get_or_create(db, KEY_NAME, lambda: Fernet.generate_key().decode()).encode())


def normalize_host(host: str) -> str:
    """Hosts compare case-insensitively; git sends them as written in the URL, with any `:port`."""
    return host.strip().lower()


def hint(host: str) -> str:
    return f"run `dockyard git-auth add {host}` to register a credential for it"


def to_wire(row: GitCredential) -> wire.GitAuth:
    return wire.GitAuth(
        id=row.id,
        host=row.host,
        username=row.username,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
    )


def _require_manage(actor: Actor, user: User, scope: Scope) -> None:
    actor.require(scope)
    # Unlike SSH keys, not even an owner manages another user's git credentials: they act as that user on
    # another system.
    if user.id != actor.user_id:
        raise Forbidden("Git credentials can only be managed by their own user.")


def add(db: Session, actor: Actor, user: User, request: wire.CreateGitAuthRequest) -> GitCredential:
    """Register (or replace) the user's credential for a host."""
    _require_manage(actor, user, Scope.USER_WRITE)
    host = normalize_host(request.host)
    secret = _fernet(db).encrypt(request.password.encode())
    row = db.scalar(select(GitCredential).where(GitCredential.user_id == user.id, GitCredential.host == host))
    action = "gitauth.update" if row is not None else "gitauth.create"
    if row is None:
        row = GitCredential(user_id=user.id, host=host, username=request.username, secret=secret)
        db.add(row)
    else:
        row.username, row.secret, row.created_at, row.last_used_at = request.username, secret, utcnow(), None
    try:
        db.flush()
    except IntegrityError as exc:
        db.rollback()
        raise Conflict(f"A credential for {host} was registered at the same time; try again.") from exc
    audit.record(
        db,
        actor,
        action,
        resource_type="git_credential",
        resource_id=row.id,
        resource_name=host,
        status_code=201,
        detail={"user": user.username, "host": host, "username": request.username},
    )
    db.commit()
    return row


def list_credentials(db: Session, actor: Actor, user: User) -> list[GitCredential]:
    _require_manage(actor, user, Scope.USER_READ)
    return list(
        db.scalars(select(GitCredential).where(GitCredential.user_id == user.id).order_by(GitCredential.host))
    )


def remove(db: Session, actor: Actor, user: User, host: str) -> None:
    _require_manage(actor, user, Scope.USER_WRITE)
    wanted = normalize_host(host)
    row = db.scalar(
        select(GitCredential).where(
            GitCredential.user_id == user.id, (GitCredential.host == wanted) | (GitCredential.id == host)
        )
    )
    if row is None:
        raise NotFound(f"No git credential for {host!r}.")
    audit.record(
        db,
        actor,
        "gitauth.delete",
        resource_type="git_credential",
        resource_id=row.id,
        resource_name=row.host,
        detail={"user": user.username, "host": row.host},
    )
    db.delete(row)
    db.commit()


def secret_for(db: Session, user_id: str, host: str) -> tuple[str, str] | None:
    """(username, secret) of the user's credential for `host`, decrypted, or None."""
    row = db.scalar(
        select(GitCredential).where(
            GitCredential.user_id == user_id, GitCredential.host == normalize_host(host)
        )
    )
    if row is None:
        return None
    try:
        secret = _fernet(db).decrypt(row.secret).decode()
    except InvalidToken:
        # Encrypted under another deployment's key (a table copied between databases): unusable here.
        return None
    row.last_used_at = utcnow()
    db.commit()
    return row.username, secret
