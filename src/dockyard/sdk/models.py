"""Wire models: the request and response bodies of the REST API.

The server uses these same classes as its FastAPI request/response models, so the API, the SDK, the CLI and
the tests cannot disagree about a field.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dockyard.sdk.manifest import ParameterSpec, TemplateManifest
from dockyard.sdk.names import Name
from dockyard.units import parse_duration


class Scope(StrEnum):
    """A `resource:action` permission carried by an API token."""

    ALL = "all"
    USER_READ = "user:read"
    USER_WRITE = "user:write"
    USER_ADMIN = "user:admin"
    TEMPLATE_READ = "template:read"
    TEMPLATE_USE = "template:use"
    TEMPLATE_WRITE = "template:write"
    WORKSPACE_READ = "workspace:read"
    WORKSPACE_CREATE = "workspace:create"
    WORKSPACE_OPERATE = "workspace:operate"
    WORKSPACE_DELETE = "workspace:delete"
    WORKSPACE_CONNECT = "workspace:connect"
    AUDIT_READ = "audit:read"
    TOKEN_WRITE = "token:write"


class Role(StrEnum):
    OWNER = "owner"
    TEMPLATE_ADMIN = "template-admin"
    MEMBER = "member"


class UserStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class Request(BaseModel):
    """Request bodies reject unknown fields so that a typo is an error, not a silently ignored option."""

    model_config = ConfigDict(extra="forbid")


class ValidationDetail(BaseModel):
    field: str
    detail: str
    file: str | None = Field(None, description="For template errors: the file the problem is in.")
    line: int | None = Field(None, description="For template errors: the line in that file (1-based).")


class ErrorResponse(BaseModel):
    """The body of every non-2xx response."""

    message: str
    detail: str = ""
    validations: list[ValidationDetail] = Field(default_factory=list)


class Health(BaseModel):
    status: str
    version: str
    database: str


class BuildInfo(BaseModel):
    version: str
    ssh_listen: str | None = None


# --- users ---------------------------------------------------------------------------------------------------


class User(BaseModel):
    id: str
    username: str
    email: str
    role: Role
    status: UserStatus
    created_at: datetime
    last_seen_at: datetime | None = None


class UserList(BaseModel):
    users: list[User]
    count: int


class CreateUserRequest(Request):
    username: Name
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$", max_length=254)
    password: str | None = Field(None, min_length=8, max_length=256)
    role: Role = Role.MEMBER


class UpdateUserRequest(Request):
    email: str | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+$", max_length=254)
    role: Role | None = None
    status: UserStatus | None = None
    password: str | None = Field(None, min_length=8, max_length=256)


class LoginRequest(Request):
    username: str = Field(max_length=64)
    password: str = Field(max_length=256)


class LoginResponse(BaseModel):
    token: str = Field(description="A session token with scope `all`; shown once.")
    expires_at: datetime
    user: User


# --- tokens --------------------------------------------------------------------------------------------------


def _check_lifetime(value: str) -> str:
    seconds = parse_duration(value).total_seconds()
    if seconds < 60:
        raise ValueError("must be at least 1m")
    if seconds > 366 * 86400:
        raise ValueError("must be at most 366d")
    return value


class CreateTokenRequest(Request):
    name: Name
    lifetime: str = Field("30d", description="How long the token is valid, e.g. 4h, 30d.")
    scopes: list[Scope] = Field(default_factory=lambda: [Scope.ALL], min_length=1)
    allow_list: list[str] = Field(
        default_factory=list,
        description="Template or workspace names/ids this token may touch; empty means no restriction.",
        max_length=100,
    )

    @field_validator("lifetime")
    @classmethod
    def _lifetime(cls, value: str) -> str:
        return _check_lifetime(value)

    @field_validator("allow_list")
    @classmethod
    def _allow_list(cls, value: list[str]) -> list[str]:
        for item in value:
            if not 1 <= len(item) <= 64:
                raise ValueError(f"{item!r} is not a template or workspace name or id")
        return value


class ApiToken(BaseModel):
    id: str
    name: str
    user_id: str
    scopes: list[Scope]
    allow_list: list[str]
    login_type: str
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None = None


class CreatedToken(ApiToken):
    key: str = Field(description="The secret; shown only in this response.")


# --- templates -----------------------------------------------------------------------------------------------


class TemplateFile(BaseModel):
    path: str
    size: int
    sha256: str
    mode: int


class TemplateVersion(BaseModel):
    id: str
    template_id: str
    number: int
    name: str
    content_hash: str
    message: str
    created_at: datetime
    created_by: str | None
    manifest: TemplateManifest
    files: list[TemplateFile]

    @property
    def parameters(self) -> list[ParameterSpec]:
        return self.manifest.parameters


class Template(BaseModel):
    id: str
    name: str
    display_name: str
    description: str
    icon: str
    active_version_id: str | None
    active_version: TemplateVersion | None = None
    created_at: datetime
    updated_at: datetime
    created_by: str | None


class UpdateTemplateRequest(Request):
    display_name: str | None = Field(None, max_length=64)
    description: str | None = Field(None, max_length=2048)
    icon: str | None = Field(None, max_length=512)
    active_version_id: str | None = Field(None, description="A version id, name (v3) or content hash prefix.")


class ParameterCheckRequest(Request):
    parameters: dict[str, Any] = Field(default_factory=dict)


class ParameterCheckResponse(BaseModel):
    parameters: dict[str, Any]


# --- audit ---------------------------------------------------------------------------------------------------


class AuditLog(BaseModel):
    id: int
    time: datetime
    user_id: str | None
    username: str
    action: str
    resource_type: str
    resource_id: str
    resource_name: str
    ip: str
    status_code: int
    detail: dict[str, Any]


class AuditLogList(BaseModel):
    audit_logs: list[AuditLog]
    count: int
