"""First start: the first owner, its token, and the built-in templates."""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard import logs
from dockyard.accounts import tokens, users
from dockyard.accounts.actor import Actor
from dockyard.store.models import User
from dockyard_sdk import models as wire

log = logs.get(__name__)
ADMIN_TOKEN_LIFETIME = timedelta(days=365)


def _write_secret(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Create with 0600 from the start: a chmod after writing would leave a window where others can read it.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    os.chmod(path, 0o600)


def first_start(db: Session, data_dir: Path, *, builtin_templates: bool) -> User | None:
    """On an empty database create the owner `admin`; returns it, or None when users already exist."""
    if db.scalar(select(User.id).limit(1)) is not None:
        return None
    password = secrets.token_urlsafe(18)
    admin = users.create(
        db,
        None,
        wire.CreateUserRequest(
            username="admin", email="admin@dockyard.local", password=password, role=wire.Role.OWNER
        ),
    )
    key, _ = tokens.issue(
        db, admin, name="admin", lifetime=ADMIN_TOKEN_LIFETIME, scopes=[wire.Scope.ALL], allow_list=[]
    )
    db.commit()
    token_path = data_dir / "admin-token"
    _write_secret(token_path, key)
    _write_secret(data_dir / "admin-password", password)
    log.info(
        "first start: created owner 'admin'",
        token_file=str(token_path),
        password_file=str(data_dir / "admin-password"),
    )
    if builtin_templates:
        from dockyard.templates import builtin

        actor = Actor(
            user_id=admin.id,
            username=admin.username,
            role=wire.Role.OWNER,
            organization_id=admin.organization_id,
            scopes=frozenset({wire.Scope.ALL}),
            ip="",
        )
        builtin.install(db, actor)
    return admin
