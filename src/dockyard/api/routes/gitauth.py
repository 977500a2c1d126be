"""A user's git credentials, released by the control plane to their workspaces' git (docs/AGENTS.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status

from dockyard.accounts.actor import Actor
from dockyard.api.deps import DbSession, UserParam, scoped
from dockyard.gitauth import credentials
from dockyard_sdk import models as wire
from dockyard_sdk.models import Scope

router = APIRouter(prefix="/api/v2/users/{user}/git-auth", tags=["git-auth"])
HostRef = Annotated[str, Path(description="The git host (or the credential's id).", max_length=255)]


@router.get("")
def list_git_auth(
    user: UserParam, db: DbSession, actor: Annotated[Actor, scoped(Scope.USER_READ)]
) -> list[wire.GitAuth]:
    """The user's git credentials by host, without their secrets."""
    return [credentials.to_wire(row) for row in credentials.list_credentials(db, actor, user)]


@router.post("", status_code=status.HTTP_201_CREATED)
def add_git_auth(
    body: wire.CreateGitAuthRequest,
    user: UserParam,
    db: DbSession,
    actor: Annotated[Actor, scoped(Scope.USER_WRITE)],
) -> wire.GitAuth:
    """Register (or replace) the credential for a git host. It is stored encrypted and handed only to the git
    of this user's workspaces whose repository is on that host, when git asks for it."""
    return credentials.to_wire(credentials.add(db, actor, user, body))


@router.delete("/{host}", status_code=status.HTTP_204_NO_CONTENT)
def remove_git_auth(
    user: UserParam, host: HostRef, db: DbSession, actor: Annotated[Actor, scoped(Scope.USER_WRITE)]
) -> None:
    """Forget the credential for a host; workspaces get no credential for it from now on."""
    credentials.remove(db, actor, user, host)
