"""Who a request runs as, and what it may do."""

from __future__ import annotations

from dataclasses import dataclass, field

from dockyard.errors import Forbidden
from dockyard_sdk.models import Role, Scope

# What each role may ever do; a token's scopes can only narrow this.
ROLE_SCOPES: dict[Role, frozenset[Scope]] = {
    Role.OWNER: frozenset(Scope),
    Role.TEMPLATE_ADMIN: frozenset(Scope) - {Scope.USER_ADMIN, Scope.AUDIT_READ, Scope.DEPLOYMENT_ADMIN},
    Role.MEMBER: frozenset(Scope)
    - {Scope.USER_ADMIN, Scope.AUDIT_READ, Scope.DEPLOYMENT_ADMIN, Scope.TEMPLATE_WRITE},
}


@dataclass(frozen=True)
class Actor:
    user_id: str
    username: str
    role: Role
    organization_id: str
    scopes: frozenset[Scope]
    allow_list: frozenset[str] = frozenset()
    token_id: str | None = None
    ip: str = ""
    # The token sees (and acts on) only the workspaces it created itself.
    own_workspaces_only: bool = False
    # `task-branch`: the workspaces this token creates push only their task branch.
    git_push: str = "any"
    _granted: frozenset[Scope] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        token = frozenset(Scope) if Scope.ALL in self.scopes else self.scopes
        object.__setattr__(self, "_granted", token & ROLE_SCOPES[self.role])

    def can(self, scope: Scope) -> bool:
        return scope in self._granted

    def require(self, scope: Scope) -> None:
        if scope in self._granted:
            return
        if scope in ROLE_SCOPES[self.role]:
            raise Forbidden(
                f"This token lacks the scope {scope.value}.", detail="Create a token with that scope."
            )
        raise Forbidden(f"Your role ({self.role.value}) does not allow {scope.value}.")

    @property
    def is_owner(self) -> bool:
        return self.role == Role.OWNER

    def _lists(self, kind: str, *keys: str) -> bool:
        return any(f"{kind}:{key}" in self.allow_list for key in keys)

    def listed(self, kind: str) -> list[str]:
        """The keys (ids and names) the allow-list names for `kind`, sorted; for filters written in SQL."""
        prefix = f"{kind}:"
        return sorted(entry[len(prefix) :] for entry in self.allow_list if entry.startswith(prefix))

    def allows_template(self, template_id: str, name: str) -> bool:
        """Whether the allow-list (if any) names this template (`template:<id>` or `template:<name>`)."""
        return not self.allow_list or self._lists("template", template_id, name)

    def allows_workspace(self, workspace_id: str, name: str, *, template_id: str, template_name: str) -> bool:
        """Whether the allow-list (if any) names this workspace, or the template it was made from. Entries
        are typed: `template:dev` never covers a workspace named `dev`."""
        return (
            not self.allow_list
            or self._lists("workspace", workspace_id, name)
            or self._lists("template", template_id, template_name)
        )

    def require_allowed(self, kind: str, *keys: str) -> None:
        """`kind` is `template` or `workspace`; `keys` the resource's id and name (the last is shown)."""
        if self.allow_list and not self._lists(kind, *keys):
            raise Forbidden(f"This token is not allowed to use {kind} {keys[-1]!r}.")

    def with_ip(self, ip: str) -> Actor:
        return Actor(
            user_id=self.user_id,
            username=self.username,
            role=self.role,
            organization_id=self.organization_id,
            scopes=self.scopes,
            allow_list=self.allow_list,
            token_id=self.token_id,
            ip=ip,
            own_workspaces_only=self.own_workspaces_only,
            git_push=self.git_push,
        )


SYSTEM = Actor(
    user_id="", username="system", role=Role.OWNER, organization_id="", scopes=frozenset({Scope.ALL})
)
