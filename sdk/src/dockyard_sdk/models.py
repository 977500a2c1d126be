"""Wire models: the request and response bodies of the REST API.

The server uses these same classes as its FastAPI request/response models, so the API, the SDK, the CLI and
the tests cannot disagree about a field.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from dockyard_sdk.manifest import GitPush as GitPush
from dockyard_sdk.manifest import ParameterSpec, TemplateManifest
from dockyard_sdk.names import Name
from dockyard_sdk.units import parse_duration, parse_size


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
    TOKEN_WRITE = "token:write"  # noqa: S105 - a scope name
    DEPLOYMENT_ADMIN = "deployment:admin"


class Role(StrEnum):
    """A user's role; it bounds the scopes any of their tokens can use."""

    OWNER = "owner"
    TEMPLATE_ADMIN = "template-admin"
    MEMBER = "member"


class UserStatus(StrEnum):
    """Whether a user may sign in: a suspended user's tokens are refused."""

    ACTIVE = "active"
    SUSPENDED = "suspended"


def _nul_path(value: Any, path: str) -> str | None:
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if isinstance(value, dict):
        for key, item in value.items():
            found = _nul_path(key, path) or _nul_path(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_path(item, f"{path}.{index}")
            if found is not None:
                return found
    return None


class Model(BaseModel):
    """The base of every wire model: a field's attribute docstring is its description in the OpenAPI document.

    An explicit `Field(description=...)` wins over the docstring. The server reads the docstrings (see
    `dockyard.api.descriptions`); a client does not need them, and pydantic's `use_attribute_docstrings` parses
    each class's source when it is defined, which cost every CLI command a third of its start-up. For the same
    reason a model builds its validator when it is first used, not when it is imported.
    """

    model_config = ConfigDict(defer_build=True)


class Request(Model):
    """Request bodies reject unknown fields so that a typo is an error, not a silently ignored option.

    They also refuse NUL characters anywhere: PostgreSQL cannot store them, and no name, path or parameter
    needs one.
    """

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _no_nul(self) -> Request:
        path = _nul_path(self.model_dump(), "")
        if path is not None:
            raise PydanticCustomError("nul_character", "NUL characters are not allowed", {"field": path})
        return self


class ValidationDetail(Model):
    """One problem with the request, and the field it is in."""

    field: str
    """The field, as a dotted path such as `parameters.branch`."""
    detail: str
    """What is wrong with it."""
    file: str | None = Field(None, description="For template errors: the file the problem is in.")
    line: int | None = Field(None, description="For template errors: the line in that file (1-based).")


class ErrorResponse(Model):
    """The body of every non-2xx response."""

    message: str
    """What went wrong, in one sentence."""
    detail: str = ""
    """More about the problem or how to fix it; may be empty."""
    validations: list[ValidationDetail] = Field(default_factory=list)
    """One entry per invalid field, for validation errors."""


class Health(Model):
    """The server's health, for load balancers and monitoring."""

    status: str
    """`ok`, or `degraded` when the database is unreachable (with status 503)."""
    version: str
    """The server's version."""
    database: str
    """`ok` or `unreachable`."""


class BuildInfo(Model):
    """The server's version."""

    version: str
    """The server's version."""
    ssh_listen: str | None = None
    """Currently always null; `GET /api/v2/deployment/ssh` tells where SSH listens."""


# --- users ---------------------------------------------------------------------------------------------------


class User(Model):
    """A Dockyard account."""

    id: str
    """The user's id."""
    username: str
    """The unique login name."""
    email: str
    """The user's email address."""
    role: Role
    """The role, which bounds the user's permissions."""
    status: UserStatus
    """`active`, or `suspended` (cannot sign in or use tokens)."""
    created_at: datetime
    """When the account was created."""
    last_seen_at: datetime | None = None
    """When one of the user's tokens was last used."""


class UserList(Model):
    """One page of users."""

    users: list[User]
    """The users on this page."""
    count: int
    """How many users match in all pages."""


class CreateUserRequest(Request):
    """A new user account (owners only)."""

    username: Name
    """The unique login name."""
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$", max_length=254)
    """The user's email address."""
    password: str | None = Field(None, min_length=8, max_length=256)
    """The login password (8-256 characters); none means no password login."""
    role: Role = Role.MEMBER
    """The user's role."""


class UpdateUserRequest(Request):
    """Changes to a user; omitted fields are left as they are."""

    email: str | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+$", max_length=254)
    """A new email address."""
    role: Role | None = None
    """A new role (owners only)."""
    status: UserStatus | None = None
    """Suspend or reactivate the user (owners only)."""
    password: str | None = Field(None, min_length=8, max_length=256)
    """A new login password (8-256 characters)."""


class LoginRequest(Request):
    """A username and password in exchange for a session token."""

    username: str = Field(max_length=64)
    """The login name."""
    password: str = Field(max_length=256)
    """The login password."""


class LoginResponse(Model):
    """A new session: its token and the user it belongs to."""

    token: str = Field(description="A session token with scope `all`; shown once.")
    expires_at: datetime
    """When the session token expires."""
    user: User
    """The user signed in."""


# --- tokens --------------------------------------------------------------------------------------------------


ALLOW_KINDS = ("template", "workspace")


def allow_entry_problem(entry: str) -> str | None:
    """Why an allow-list entry is invalid, or None. An entry names its kind, so that a token limited to the
    template `sandbox` never covers a workspace that merely has that name."""
    kind, separator, value = entry.partition(":")
    if not separator or kind not in ALLOW_KINDS:
        return f"{entry[:80]!r} must name its kind: template:NAME or workspace:NAME (or an id)"
    if not 1 <= len(value) <= 64:
        return f"{entry[:80]!r}: the {kind} name or id must be 1 to 64 characters"
    return None


def _check_lifetime(value: str) -> str:
    seconds = parse_duration(value).total_seconds()
    if seconds < 60:
        raise ValueError("must be at least 1m")
    if seconds > 366 * 86400:
        raise ValueError("must be at most 366d")
    return value


class CreateTokenRequest(Request):
    """A new API token for a user."""

    name: Name
    """A name for the token, unique per user."""
    lifetime: str = Field("30d", description="How long the token is valid, e.g. 4h, 30d.")
    scopes: list[Scope] = Field(default_factory=lambda: [Scope.ALL], min_length=1)
    """What the token may do, within the user's role; `all` by default."""
    own_workspaces_only: bool = Field(
        False, description="The token sees and acts on only the workspaces it created itself."
    )
    git_push: GitPush = Field(
        GitPush.ANY,
        description="`task-branch`: the workspaces this token creates push only their task branch, through "
        "Dockyard's git proxy, whatever their template says.",
    )
    allow_list: list[str] = Field(
        default_factory=list,
        description="What this token may touch, each entry naming its kind: `template:NAME`, "
        "`template:ID`, `workspace:NAME` or `workspace:ID` (a template entry covers the workspaces made "
        "from it). Empty means no restriction.",
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
            problem = allow_entry_problem(item)
            if problem:
                raise ValueError(problem)
        return value


class ApiToken(Model):
    """An API token, without its secret."""

    id: str
    """The token's id (not its secret)."""
    name: str
    """The token's name."""
    user_id: str
    """The id of the user the token acts as."""
    scopes: list[Scope]
    """What the token may do, within its user's role."""
    allow_list: list[str]
    """Template or workspace names/ids this token may touch; empty means no restriction."""
    login_type: str
    """`password` for a session from a login, `token` for a created token."""
    own_workspaces_only: bool = False
    """Whether the token sees only the workspaces it created."""
    git_push: GitPush = GitPush.ANY
    """`task-branch`: the workspaces it creates push only their task branch."""
    created_at: datetime
    """When the token was created."""
    expires_at: datetime
    """When the token stops working."""
    last_used_at: datetime | None = None
    """When the token last authenticated a request."""


class CreatedToken(ApiToken):
    """A newly created API token, with its secret."""

    key: str = Field(description="The secret; shown only in this response.")


# --- templates -----------------------------------------------------------------------------------------------


class TemplateFile(Model):
    """One file of a template version."""

    path: str
    """The file's path in the template folder."""
    size: int
    """Size in bytes."""
    sha256: str
    """SHA-256 of the content, in hex."""
    mode: int
    """Unix permission bits: 493 (0o755) for executables, else 420 (0o644)."""


class TemplateVersion(Model):
    """An immutable, pushed version of a template: its manifest and files."""

    id: str
    """The version's id."""
    template_id: str
    """The id of the template it belongs to."""
    number: int
    """1 for the first version of the template, then counting up."""
    name: str
    """`v` and the number, e.g. `v3`."""
    content_hash: str
    """A hash of all files; identical pushes share it."""
    message: str
    """The message given when it was pushed."""
    created_at: datetime
    """When it was pushed."""
    created_by: str | None
    """The id of the user who pushed it; null if unknown."""
    manifest: TemplateManifest
    """The version's parsed `dockyard.yaml`."""
    files: list[TemplateFile]
    """The version's files."""

    @property
    def parameters(self) -> list[ParameterSpec]:
        return self.manifest.parameters


class Template(Model):
    """A workspace template: its metadata and its active version."""

    id: str
    """The template's id."""
    name: str
    """The unique name, used in `dockyard create` and the API."""
    display_name: str
    """A human-friendly name; may be empty."""
    description: str
    """What the template is for."""
    icon: str
    """The icon to show; may be empty."""
    active_version_id: str | None
    """The version new workspaces use; null before the first push."""
    active_version: TemplateVersion | None = None
    """The active version, manifest included."""
    created_at: datetime
    """When the template was created."""
    updated_at: datetime
    """When the template last changed."""
    created_by: str | None
    """The id of the user who created it; null if unknown."""


class PrebuildPreset(Model):
    """One preset of a template's warm pool, for the template's active version."""

    template: str
    """The template's name."""
    template_version_id: str
    """The version whose members this preset keeps (the active one)."""
    version: int
    """That version's number."""
    preset: str
    """The preset's key: a hash of the version and its parameter values."""
    parameters: dict[str, Any]
    """The preset's parameter values, defaults filled in: a create with exactly these claims a member."""
    desired: int
    """How many members the template asks for."""
    ready: int
    """Members started with their agent ready: a create can claim these now."""
    building: int
    """Members being made (queued, starting, or running their startup part)."""
    failed: int
    """Members whose start failed; the pool replaces them."""
    images: list[str]
    """The images the ready members run."""


class PrebuildList(Model):
    """Warm pool presets of the templates you may use."""

    presets: list[PrebuildPreset]
    """One entry per preset of each template's active version."""
    outdated: int
    """Members of versions that are no longer active, waiting to be removed."""


class UpdateTemplateRequest(Request):
    """Changes to a template; omitted fields are left as they are."""

    display_name: str | None = Field(None, max_length=64)
    """A new human-friendly name."""
    description: str | None = Field(None, max_length=2048)
    """A new description."""
    icon: str | None = Field(None, max_length=512)
    """A new icon URL or path."""
    active_version_id: str | None = Field(None, description="A version id, name (v3) or content hash prefix.")


class ParameterCheckRequest(Request):
    """Parameter values to validate against a template version."""

    parameters: dict[str, Any] = Field(default_factory=dict)
    """Parameter values by name."""


class ParameterCheckResponse(Model):
    """The validated parameter values, with defaults filled in."""

    parameters: dict[str, Any]
    """Every parameter's value by name, defaults included."""


# --- audit ---------------------------------------------------------------------------------------------------


class AuditLog(Model):
    """One recorded action: who did what to which resource, and the outcome."""

    id: int
    """The entry's id; larger is newer."""
    time: datetime
    """When it happened."""
    user_id: str | None
    """The acting user's id; null for the system and workspace agents."""
    username: str
    """The acting user's name (`system` or `agent` for those)."""
    action: str
    """What was done, `resource.verb`, e.g. `template.create`."""
    resource_type: str
    """The kind of resource acted on, e.g. `workspace`."""
    resource_id: str
    """The resource's id."""
    resource_name: str
    """The resource's name when it was acted on."""
    ip: str
    """The client's IP address; empty when not from a request."""
    status_code: int
    """The HTTP status of the outcome (e.g. 403 for a refusal)."""
    detail: dict[str, Any]
    """Action-specific details, e.g. the values before and after a change."""


class AuditLogList(Model):
    """One page of audit log entries, newest first."""

    audit_logs: list[AuditLog]
    """The entries on this page."""
    count: int
    """How many entries match in all pages."""


class EgressEvent(Model):
    """One connection (or DNS question) an `allowlist` workspace made through the egress proxy (or that the proxy
    intercepted)."""

    id: int
    """The entry's id; larger is newer."""
    time: datetime
    """When the proxy decided."""
    protocol: str
    """`connect` (an HTTP CONNECT tunnel, e.g. https), `http` (a plain HTTP request, through the proxy or
    intercepted on port 80), `tls` (an intercepted TLS connection, by its SNI), `tcp` (an intercepted connection,
    by its address) or `dns`."""
    host: str
    """The host name or address asked for."""
    port: int
    """The port asked for (0 for DNS)."""
    decision: str
    """`allowed`, `denied` (not in the allow-list, or an address the proxy never dials) or `failed` (allowed,
    but the host could not be resolved or reached)."""
    reason: str
    """Why it was denied or failed; empty when allowed."""


class EgressEventList(Model):
    """One page of a workspace's egress log, newest first."""

    events: list[EgressEvent]
    """The entries on this page."""
    count: int
    """How many entries the workspace has in all pages."""


# --- workspaces ----------------------------------------------------------------------------------------------


class Transition(StrEnum):
    """What a build does to a workspace."""

    START = "start"
    STOP = "stop"
    DELETE = "delete"


class BuildStatus(StrEnum):
    """Where a build is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELING = "canceling"
    CANCELED = "canceled"


class BuildReason(StrEnum):
    """Why a build was queued: on request (`initiator`) or at the TTL deadline (`ttl`); others are unused."""

    INITIATOR = "initiator"
    TTL = "ttl"
    IDLE = "idle"
    AUTOSTART = "autostart"
    RECONCILE = "reconcile"
    PREBUILD = "prebuild"
    """The warm pool made or removed one of its members (behind user builds in the queue)."""
    CLAIM = "claim"
    """A create took a started pool member: the build records the claim, nothing was restarted."""


class WorkspaceStatus(StrEnum):
    """A workspace's state, derived from its latest build and its runtime."""

    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    DELETING = "deleting"
    DELETED = "deleted"
    FAILED = "failed"
    CANCELING = "canceling"
    CANCELED = "canceled"


class ParameterValueItem(Model):
    """Coder's `rich_parameter_values` entry."""

    name: str
    """The parameter's name."""
    value: Any
    """Its value."""


def _ttl_seconds(value: str | int | float) -> int:
    seconds = int(value) if isinstance(value, int | float) else int(parse_duration(value).total_seconds())
    if seconds < 60:
        raise ValueError("must be at least 1m")
    if seconds > 366 * 86400:
        raise ValueError("must be at most 366d")
    return seconds


class CreateWorkspaceRequest(Request):
    """Creates a workspace and its first `start` build.

    Accepts Dockyard's shape (`template`, `parameters`, `ttl: "4h"`), the `template_id` + `rich_parameters`
    shape, and Coder's field names (`template_version_id`, `rich_parameter_values`, `ttl_ms`).
    """

    template: str | None = Field(
        None,
        validation_alias=AliasChoices("template", "template_id"),
        max_length=64,
        description="Template id or name (also accepted as `template_id`).",
    )
    template_version_id: str | None = Field(None, max_length=64, description="A specific version to use.")
    name: Name | None = Field(None, description="Workspace name; generated when missing.")
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        validation_alias=AliasChoices("parameters", "rich_parameters"),
        description="Parameter values by name (also accepted as `rich_parameters`).",
    )
    rich_parameter_values: list[ParameterValueItem] = Field(default_factory=list, description="Coder's form.")
    ttl: str | None = Field(None, description="Time until the template's on_ttl action, e.g. 4h.")
    ttl_ms: int | None = Field(None, ge=0, description="Coder's form of `ttl`, in milliseconds.")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: str | None) -> str | None:
        if value is not None:
            _ttl_seconds(value)
        return value

    @model_validator(mode="after")
    def _template_named(self) -> CreateWorkspaceRequest:
        if self.template is None and self.template_version_id is None:
            raise ValueError("give template (id or name) or template_version_id")
        if self.ttl is not None and self.ttl_ms is not None:
            raise ValueError("give ttl or ttl_ms, not both")
        if self.ttl_ms is not None:
            _ttl_seconds(self.ttl_ms // 1000)
        return self

    def all_parameters(self) -> dict[str, Any]:
        return {**{item.name: item.value for item in self.rich_parameter_values}, **self.parameters}

    def ttl_seconds(self) -> int | None:
        if self.ttl is not None:
            return _ttl_seconds(self.ttl)
        if self.ttl_ms is not None:
            return self.ttl_ms // 1000
        return None


class WorkspaceBuild(Model):
    """One start, stop or delete of a workspace, run by the provisioner."""

    id: str
    """The build's id."""
    workspace_id: str
    """The id of the workspace it acts on."""
    workspace_name: str
    """That workspace's name."""
    number: int
    """1 for the workspace's first build, then counting up."""
    transition: Transition
    """What the build does: start, stop or delete."""
    status: BuildStatus
    """Where the build is: pending, running, succeeded, failed or canceled."""
    reason: BuildReason
    """Why it was queued."""
    initiator: str | None
    """The name of the user who asked for it; null when the system did."""
    template_version_id: str
    """The template version it runs."""
    template_version_name: str
    """That version's name, e.g. `v3`."""
    error: str
    """Why the build failed; empty otherwise."""
    timings: dict[str, float] = Field(
        description="Seconds spent per phase (queue, image, network, container)."
    )
    created_at: datetime
    """When it was queued."""
    started_at: datetime | None
    """When a worker began it; null while queued."""
    completed_at: datetime | None
    """When it ended; null while in progress."""


class BuildLogLine(Model):
    """One line of a build's log."""

    id: int
    """The line's id; larger is later (use it as `after` to resume)."""
    time: datetime
    """When it was logged."""
    stage: str
    """The build phase that wrote it (e.g. `queue`, `image`), or the agent's output source."""
    output: str
    """The text."""


class WorkspaceResources(Model):
    """The resources a workspace is given."""

    cpu: float
    """CPU cores."""
    memory_bytes: int
    """Memory limit in bytes."""
    disk: str | None
    """The home folder's size limit, e.g. 10Gi (enforced as a file system of that size where the runtime can)."""
    gpu: int
    """Number of GPUs."""


class AgentConnection(StrEnum):
    """Whether the workspace's agent is connected to the server."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


class AgentLifecycle(StrEnum):
    """Where the agent is in running the startup and shutdown scripts."""

    CREATED = "created"
    STARTING = "starting"
    READY = "ready"
    START_ERROR = "start_error"
    START_TIMEOUT = "start_timeout"
    SHUTTING_DOWN = "shutting_down"
    OFF = "off"


class ListeningPort(Model):
    """A TCP port that something listens on inside the workspace."""

    port: int
    """The TCP port number."""
    address: str = ""
    """The address listened on, e.g. 127.0.0.1 or ::."""
    family: str = "ipv4"
    """`ipv4` or `ipv6`."""


class WorkspaceApp(Model):
    """A template app of a workspace, where to open it, and its health."""

    slug: str
    """The app's name in URLs."""
    display_name: str = ""
    """Label shown in the dashboard."""
    port: int
    """The port it listens on inside the workspace."""
    share: str = "owner"
    """Who may open it: `owner`, `authenticated` or `public`."""
    subdomain: bool = False
    """The template prefers the app's own host (used when the server has a wildcard access URL)."""
    url: str
    """Where to open it: its own host when the server has a wildcard access URL and the app asks for one,
    else its path on the server."""
    path_url: str
    """The app under the server's own origin: `/@owner/workspace/apps/slug/`."""
    subdomain_url: str | None = None
    """The app on its own host, when the server has a wildcard access URL."""
    health: str = "disabled"
    """`disabled` (no healthcheck), `initializing`, `healthy`, `unhealthy`, or `unknown` (not checked here)."""
    health_detail: str = ""
    """Why the last check failed."""


class WorkspaceApps(Model):
    """A workspace's apps."""

    apps: list[WorkspaceApp]
    """The apps in the template's order."""


class AgentStats(Model):
    """Resource use the agent last reported."""

    cpu_cores: float | None = Field(None, description="CPU cores in use, averaged since the last report.")
    memory_bytes: int | None = None
    """Memory in use, in bytes."""
    memory_limit_bytes: int | None = None
    """The workspace's memory limit, in bytes."""
    oom_kills: int | None = Field(
        None, description="Processes the kernel killed for the memory limit since the container started."
    )
    pids_current: int | None = Field(None, description="Processes (tasks) running in the workspace.")
    pids_limit: int | None = Field(None, description="The template's `resources.pids`.")
    pids_limit_hits: int | None = Field(
        None, description="Forks refused at the process limit (EAGAIN) since the container started."
    )
    disk_used_bytes: int | None = Field(None, description="Of the file system holding the home folder.")
    disk_total_bytes: int | None = None
    """Size of the file system holding the home folder."""
    disk_limit_bytes: int | None = Field(
        None,
        description="The template's `resources.disk` when the runtime enforces it (the home folder is then a "
        "file system of that size); none when the home shares the host's disk.",
    )

    @property
    def limits_hit(self) -> list[str]:
        """The limits this workspace has run into: memory, pids."""
        return [
            name
            for name, count in (("memory", self.oom_kills), ("pids", self.pids_limit_hits))
            if count is not None and count > 0
        ]


class WorkspaceAgent(Model):
    """The agent inside a workspace: its connection, startup progress and last report."""

    status: AgentConnection
    """Whether the agent is connected (an agent silent too long reads as disconnected)."""
    lifecycle: AgentLifecycle
    """How far startup got: `ready` once the startup script succeeded, or why it did not."""
    version: str = ""
    """The agent's version; empty before it connected."""
    exit_code: int | None = Field(None, description="Exit code of the startup script when it failed.")
    error: str | None = Field(
        None,
        description="Why startup failed, when the agent can say more than an exit code (a failed clone).",
    )
    first_connected_at: datetime | None = None
    """When the agent first connected."""
    last_connected_at: datetime | None = None
    """When the agent last connected."""
    disconnected_at: datetime | None = None
    """When the agent last disconnected."""
    last_seen_at: datetime | None = None
    """When the server last heard from the agent."""
    started_at: datetime | None = None
    """When the startup script started."""
    ready_at: datetime | None = None
    """When the startup script ended (or failed or timed out)."""
    stats: AgentStats | None = None
    """Resource use the agent last reported; null before its first report."""
    ports: list[ListeningPort] = Field(default_factory=list)
    """TCP ports listening inside the workspace, as last reported."""


class TaskState(StrEnum):
    """What a coding task in a workspace is doing, as the workspace reports it."""

    WORKING = "working"
    IDLE = "idle"
    WAITING_INPUT = "waiting_input"
    DONE = "done"
    FAILED = "failed"


class TaskLink(Model):
    """A link a task reports, such as its pull request."""

    name: str = Field(min_length=1, max_length=64, description="What the link is, e.g. `pr`.")
    url: str = Field(max_length=2048, pattern=r"^https?://", description="An http:// or https:// URL.")


class TaskReport(Request):
    """A task's new state: from `dockyard-agent report` inside the workspace, or from an orchestrator."""

    state: TaskState = Field(description="working, idle, waiting_input, done or failed.")
    summary: str = Field("", max_length=2000, description="One or a few lines on what happened.")
    links: list[TaskLink] = Field(default_factory=list, max_length=10, description="Up to 10 links.")


class TaskStatus(TaskReport):
    """The task state a workspace last reported."""

    model_config = ConfigDict(extra="ignore")

    source: str = Field(description="`agent` (reported inside the workspace) or `api`.")
    updated_at: datetime = Field(description="When it was reported.")


class Workspace(Model):
    """A workspace: a template version run for its owner with the given parameters."""

    id: str
    """The workspace's id."""
    name: str
    """The name, unique per owner."""
    owner_id: str
    """The owner's user id."""
    owner_name: str
    """The owner's username."""
    template_id: str
    """The template's id."""
    template_name: str
    """The template's name."""
    template_version_id: str
    """The template version the workspace runs (or will on its next start)."""
    template_version_name: str
    """That version's name, e.g. `v3`."""
    outdated: bool = Field(description="A newer template version is active.")
    parameters: dict[str, Any]
    """Parameter values by name, defaults included."""
    status: WorkspaceStatus
    """The workspace's state, derived from its latest build and its runtime."""
    status_reason: str = Field("", description="Why the workspace is in this status, e.g. a failure.")
    latest_build: WorkspaceBuild
    """The most recent build."""
    ttl_ms: int | None
    """Time from start until the template's `on_ttl` action, in ms; null for none."""
    deadline: datetime | None
    """When the `on_ttl` action is due; null when none is set."""
    created_at: datetime
    """When the workspace was created."""
    updated_at: datetime
    """When the workspace or its settings last changed."""
    last_used_at: datetime | None
    """When it was last used through SSH, a terminal, exec, files or a port forward."""
    agent: WorkspaceAgent | None = Field(
        None, description="The agent inside the workspace; none before its first start."
    )
    task: TaskStatus | None = Field(None, description="The coding task's last reported state, if any.")
    idle_timeout_ms: int | None = Field(
        None, description="Stopped after this long without activity (the template's `lifetime.idle_timeout`)."
    )
    lifetime: WorkspaceLifetime | None = Field(
        None, description="Why it counts as active and when it stops by itself; null unless running."
    )
    autostart: AutostartSchedule | None = Field(
        None, description="When a stopped workspace starts by itself."
    )


class WorkspaceLifetime(Model):
    """A running workspace's activity, and the automatic stop ahead of it."""

    active: bool
    """Whether something counts as using the workspace now."""
    active_reason: str = ""
    """Why it counts as active (e.g. `ssh session`, `task working`), or why not."""
    last_activity_at: datetime | None = None
    """When it was last used: SSH, terminals, exec, port forwards, files, or a task reporting `working`."""
    last_activity_reason: str | None = None
    """What that use was: `ssh`, `terminal`, `exec`, `port_forward`, `files`, `task` or `started`."""
    idle_stop_at: datetime | None = None
    """When it stops if nothing uses it until then; null without an idle timeout or while a task works."""
    stops_at: datetime | None = None
    """The next automatic stop (or delete): the earlier of the TTL deadline and the idle stop."""
    stop_reason: str | None = None
    """What that stop is due to: `ttl` or `idle`."""
    warned: bool = False
    """Whether the warning event for that stop was sent."""


class LifetimeWarning(Model):
    """Sent on the watch stream (`event: warning`) shortly before an automatic stop."""

    workspace_id: str
    """The workspace's id."""
    workspace_name: str
    """The workspace's name."""
    stop_reason: str
    """`idle` or `ttl`."""
    stops_at: datetime
    """When the stop is due."""
    message: str
    """What happens, and how to keep the workspace."""


class AutostartSchedule(Model):
    """A cron schedule, in a time zone, on which a stopped workspace starts."""

    schedule: str
    """Five cron fields, e.g. `0 9 * * 1-5`."""
    timezone: str
    """An IANA time zone, e.g. `Europe/Berlin`."""
    next_at: datetime | None = None
    """The next time it is due."""


class ScheduleRequest(Request):
    """Set or clear a workspace's autostart schedule."""

    autostart: str | None = Field(
        None, max_length=128, description="Five cron fields, e.g. `0 9 * * 1-5`; null turns autostart off."
    )
    timezone: str = Field("UTC", max_length=64, description="An IANA time zone, e.g. `Europe/Berlin`.")


class QuotaLimits(Request):
    """Limits for a user or a token; a null field means no limit."""

    max_workspaces: int | None = Field(None, ge=0, le=100_000, description="Workspaces running at once.")
    max_cpu: float | None = Field(None, ge=0, le=1_000_000, description="CPU cores of running workspaces.")
    max_memory: str | int | None = Field(
        None, description="Memory of running workspaces, e.g. `64Gi` (or bytes)."
    )
    creates_per_minute: int | None = Field(
        None, ge=0, le=100_000, description="Workspace creates in any 60 s (per token only)."
    )

    @field_validator("max_memory")
    @classmethod
    def _memory(cls, value: str | int | None) -> str | int | None:
        if value is not None:
            parse_size(value)
        return value


class QuotaUsage(Model):
    """What counts against a quota now."""

    workspaces: int
    """Workspaces that are running or starting."""
    cpu: float
    """Their CPU cores."""
    memory_bytes: int
    """Their memory, in bytes."""
    creates_last_minute: int = 0
    """Workspaces created in the last 60 s (tokens)."""


class Quota(Model):
    """A user's or token's limits and what uses them now."""

    subject_type: str
    """`user` or `token`."""
    subject_id: str
    """The user's or token's id."""
    max_workspaces: int | None = None
    """Workspaces running at once; null for no limit."""
    max_cpu: float | None = None
    """CPU cores of running workspaces; null for no limit."""
    max_memory_bytes: int | None = None
    """Memory of running workspaces in bytes; null for no limit."""
    creates_per_minute: int | None = None
    """Workspace creates in any 60 s; null for no limit."""
    usage: QuotaUsage
    """What counts against these limits now."""


class WorkspaceList(Model):
    """One page of workspaces."""

    workspaces: list[Workspace]
    """The workspaces on this page."""
    count: int
    """How many workspaces match in all pages."""


class TtlRequest(Request):
    """A new TTL. A running workspace's deadline moves to this long from now, without a restart."""

    ttl: str | None = Field(None, description="A duration such as `2h`; `0` removes the deadline.")
    ttl_ms: int | None = Field(
        None, ge=0, description="Coder's form of `ttl`, in milliseconds; 0 removes it."
    )

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: str | None) -> str | None:
        if value is not None and value != "0":
            _ttl_seconds(value)
        return value

    @model_validator(mode="after")
    def _one(self) -> TtlRequest:
        if (self.ttl is None) == (self.ttl_ms is None):
            raise ValueError("give ttl or ttl_ms (exactly one)")
        if self.ttl_ms:
            _ttl_seconds(self.ttl_ms // 1000)
        return self

    def seconds(self) -> int | None:
        """The TTL in seconds; None removes it."""
        if self.ttl is not None:
            return None if self.ttl == "0" else _ttl_seconds(self.ttl)
        return (self.ttl_ms or 0) // 1000 or None


class CreateBuildRequest(Request):
    """A transition to queue for a workspace."""

    transition: Transition
    """`start`, `stop` or `delete`."""
    template_version_id: str | None = Field(
        None, max_length=64, description="For start: the version to move to (`active` for the newest)."
    )


class UpdateWorkspaceRequest(Request):
    """Changes to a workspace that take effect on its next start."""

    parameters: dict[str, Any] | None = Field(None, description="New values for mutable parameters.")
    template_version_id: str | None = Field(
        None, max_length=64, description="Move to this version (`active` for the newest) on the next start."
    )
    ttl: str | None = Field(None, description="New TTL, applied from the next start; `0` removes it.")

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: str | None) -> str | None:
        if value is not None and value != "0":
            _ttl_seconds(value)
        return value


class OrphanedResource(Model):
    """A runtime resource labelled as Dockyard's whose workspace no longer exists."""

    kind: str
    """`container`, `volume` or `network`."""
    name: str
    """The resource's name in the runtime."""
    workspace_id: str
    """The id of the workspace it was made for."""


class HostFirewallReport(Model):
    """Whether the host firewall keeps this deployment's workspaces off the host's own services."""

    ok: bool = Field(description="Enforced here, and no network of this deployment is missing its rules.")
    error: str = Field("", description="Why the firewall cannot be used by the server (e.g. not root).")
    missing: list[str] = Field(
        default_factory=list, description="Networks of this deployment without host rules (before a prune)."
    )
    stale: list[str] = Field(
        default_factory=list, description="Bridges that are gone but still have this deployment's rules."
    )


class DatabaseReport(Model):
    """The database's connections as the answering server process sees them."""

    backend: str = Field(description="`sqlite` or `postgresql`.")
    pool_limit: int | None = Field(
        None, description="The most connections this server process's pool may open (none: one per use)."
    )
    admitted: int | None = Field(
        None,
        description="PostgreSQL: the connections it admits, `max_connections` less those reserved for "
        "superusers.",
    )
    in_use: int | None = Field(None, description="PostgreSQL: connections open now, by every client.")
    warning: str = Field(
        "",
        description="Set when one process's pool may open more than PostgreSQL admits, or when nine in ten "
        "of those are open; empty otherwise.",
    )


class DoctorReport(Model):
    """The runtime's health and how far it agrees with Dockyard's records."""

    runtime: str
    """The runtime's name, e.g. `docker`."""
    runtime_ok: bool
    """Whether the runtime answered."""
    deployment: str = Field("", description="This deployment's id, the `dockyard.deployment` label's value.")
    runtime_error: str = ""
    """Why it did not; empty when it did."""
    orphans: list[OrphanedResource]
    """Resources labelled as Dockyard's whose workspace no longer exists."""
    drifted: list[str] = Field(description="Names of workspaces whose runtime state disagrees with Dockyard.")
    removed: list[OrphanedResource] = Field(
        default_factory=list, description="What a prune removed (empty for a plain check)."
    )
    warm_networks: dict[str, int] = Field(
        default_factory=dict,
        description="Workspace networks made ahead of demand and not yet claimed, by class (open, internal).",
    )
    host_firewall: HostFirewallReport | None = Field(
        None, description="The host firewall's state; absent when the runtime did not answer."
    )
    shared_bridge: bool = Field(
        False,
        description="Whether egress-`all` workspaces share the deployment bridge (ports the server plugs in) "
        "rather than a network each; such workspaces take no warm networks.",
    )
    repaired: HostFirewallReport | None = Field(
        None, description="What a prune found missing or stale in the host firewall and put right."
    )
    database: DatabaseReport | None = Field(
        None, description="The database's connections; absent from servers before this field."
    )


# --- connecting: exec, files, SSH -------------------------------------------------------------------------------

MAX_EXEC_OUTPUT = 16 * 2**20


class ExecRequest(Request):
    """A command to run in the workspace, waiting for it to finish."""

    command: list[str] | str = Field(description="argv (run as is) or a shell string (run with `sh -c`).")
    cwd: str | None = Field(None, max_length=4096, description="Working folder; the home folder by default.")
    env: dict[str, str] = Field(default_factory=dict, description="Added to the workspace environment.")
    stdin: str | None = Field(None, description="Text fed to the command's standard input.")
    timeout: float = Field(60, gt=0, le=3600, description="Seconds before the command is killed.")
    max_output_bytes: int = Field(
        2**20, ge=1, le=MAX_EXEC_OUTPUT, description="Kept of stdout and of stderr each; the rest is dropped."
    )
    encoding: Literal["utf-8", "base64"] = Field(
        "utf-8",
        description="How stdout and stderr are returned: `utf-8` text (bytes that are not UTF-8 become U+FFFD "
        "and the result says `lossy`), or `base64` of the exact bytes.",
    )

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty")
        if isinstance(value, list) and (not value or not value[0]):
            raise ValueError("must name a program")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not key or "=" in key:
                raise ValueError(f"{key!r} is not a valid environment variable name")
        return value


class PtyRequest(Request):
    """A terminal size and type."""

    width: int = Field(80, ge=1, le=1000)
    """Columns."""
    height: int = Field(24, ge=1, le=1000)
    """Rows."""
    term: str = Field("xterm-256color", max_length=64, pattern=r"^[A-Za-z0-9._+-]+$")
    """The TERM value, e.g. xterm-256color."""


class ExecStreamRequest(ExecRequest):
    """The first message on the exec WebSocket; `stdin`, `max_output_bytes` and `encoding` do not apply there
    (output travels as binary messages, byte for byte)."""

    pty: PtyRequest | None = Field(None, description="Run the command on a terminal of this size.")
    timeout: float | None = Field(  # type: ignore[assignment]
        None, gt=0, le=7 * 86400, description="Seconds before the command is killed; none by default."
    )


class ExecResult(Model):
    """How a command ended, and its output."""

    exit_code: int | None = Field(description="None when the command was killed on timeout.")
    signal: str | None = Field(None, description="The signal that ended the command, e.g. KILL.")
    stdout: str = Field(description="As the request's `encoding` says: text, or base64 of the bytes.")
    stderr: str
    """Standard error, in the same `encoding` as stdout."""
    encoding: Literal["utf-8", "base64"] = Field("utf-8", description="The encoding of stdout and stderr.")
    lossy: bool = Field(
        False,
        description="With utf-8: stdout or stderr held bytes that are not UTF-8, shown as U+FFFD. Ask for "
        "`encoding: base64` to get them exactly.",
    )
    stdout_truncated: bool = False
    """Whether stdout was cut at `max_output_bytes`."""
    stderr_truncated: bool = False
    """Whether stderr was cut at `max_output_bytes`."""
    timed_out: bool = Field(False, description="Killed at the timeout, with every process it started.")
    limits_hit: list[Literal["memory", "pids"]] = Field(
        default_factory=list,
        description="Workspace limits hit while the command ran: `memory` (the kernel killed a process for "
        "the memory limit), `pids` (a fork failed at the process limit). Counted for the whole workspace.",
    )
    duration_ms: float
    """How long the command ran, in milliseconds."""

    @property
    def truncated(self) -> bool:
        """Whether stdout or stderr was cut at `max_output_bytes`."""
        return self.stdout_truncated or self.stderr_truncated


class FileEntry(Model):
    """One entry of a folder listing."""

    name: str
    """The entry's name within the folder."""
    type: str = Field(description="file, dir, symlink or other.")
    size: int
    """Size in bytes."""
    mode: int
    """Unix permission bits (e.g. 0o644 as 420)."""
    mtime: float
    """Last modification, as Unix time in seconds."""


class FileList(Model):
    """A folder's entries."""

    path: str
    """The folder listed."""
    entries: list[FileEntry]
    """Its entries."""


class FileWritten(Model):
    """The file an upload wrote."""

    path: str
    """The file written."""
    size: int
    """Bytes written."""


class SshKey(Model):
    """A public key registered for SSH access through the gateway."""

    id: str
    """The key's id."""
    name: str
    """The key's name, unique per user."""
    fingerprint: str = Field(description="SHA256 fingerprint, as `ssh-keygen -l` prints it.")
    public_key: str
    """The OpenSSH public key line."""
    created_at: datetime
    """When the key was registered."""
    last_used_at: datetime | None
    """When the key last authenticated an SSH connection."""


class CreateSshKeyRequest(Request):
    """A public key to register for SSH access."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")
    """A name for the key, unique per user."""
    public_key: str = Field(min_length=16, max_length=16384, description="One OpenSSH public key line.")


class GitAuth(Model):
    """A credential registered for one git host; its secret is never shown again."""

    id: str
    """The credential's id."""
    host: str = Field(description="The git host, as git names it (`github.com`, `git.example:8443`).")
    username: str
    """The user name git is given with the secret."""
    created_at: datetime
    """When the credential was registered."""
    last_used_at: datetime | None
    """When an agent last received it."""


class CreateGitAuthRequest(Request):
    """A credential for a git host (a personal access token, or a password)."""

    host: str = Field(
        min_length=1,
        max_length=255,
        pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$",
        description="The git host, with `:port` when not the default (`github.com`, `127.0.0.1:8080`).",
    )
    username: str = Field(
        "x-access-token",
        min_length=1,
        max_length=255,
        pattern=r"^[^\s:]+$",
        description="The user name git sends; hosts that take a token accept any name.",
    )
    password: str = Field(min_length=1, max_length=4096, description="The token or password.")


class WebhookStatus(StrEnum):
    """Whether a webhook is being delivered to, or has failed too often in a row."""

    ACTIVE = "active"
    FAILING = "failing"


class Webhook(Model):
    """An outgoing webhook for task and workspace status changes of its user's workspaces."""

    id: str
    """The webhook's id."""
    url: str
    """Where events are posted."""
    status: WebhookStatus
    """`failing` after too many deliveries in a row failed; delivery goes on, and a success clears it."""
    consecutive_failures: int
    """Deliveries that failed in a row (each after its retries)."""
    last_error: str | None
    """Why the last failed delivery failed."""
    last_delivery_at: datetime | None
    """When an event was last delivered."""
    created_at: datetime
    """When the webhook was added."""
    token_id: str | None = None
    """The token whose workspaces alone it hears about; null: all of its user's workspaces."""


class CreatedWebhook(Webhook):
    """A new webhook with its signing secret, shown only this once."""

    secret: str
    """The HMAC-SHA256 key of the `X-Dockyard-Signature` header."""


class CreateWebhookRequest(Request):
    """Where to post task and workspace status changes."""

    url: str = Field(
        min_length=8,
        max_length=2048,
        pattern=r"^https?://[^\s]+$",
        description="An http:// or https:// URL that takes POSTed JSON.",
    )
    secret: str | None = Field(
        None, min_length=16, max_length=128, description="The signing key; made for you when left out."
    )
    token: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="One of the user's tokens (id or name): the webhook then gets only the events of "
        "workspaces created with that token. A token that sees only its own workspaces always gets a webhook "
        "of its own.",
    )


class SshCertificateRequest(Request):
    """A public key to certify for SSH access."""

    public_key: str = Field(min_length=16, max_length=16384, description="The public key to certify.")
    valid_for: str = Field("16h", description="How long the certificate is valid, e.g. 16h (at most 7d).")


class SshCertificate(Model):
    """A short-lived OpenSSH user certificate and the CA that signed it."""

    certificate: str = Field(description="OpenSSH user certificate (`…-cert.pub` content).")
    serial: int = Field(
        0, description="The certificate's serial, unique per certificate (0 from older servers)."
    )
    principals: list[str]
    """The names the certificate is valid for."""
    valid_before: datetime
    """When the certificate expires."""
    ca_public_key: str
    """The user CA's public key, which the gateway trusts."""


class SshGateway(Model):
    """What a client needs to reach the SSH gateway and trust it without a prompt."""

    host: str
    """The host to connect to."""
    port: int
    """The port to connect to."""
    host_key_alias: str = Field(description="The name the gateway's host certificate is issued to.")
    ca_public_key: str
    """The public key of the CA that certifies the gateway's host key."""
    known_hosts: str = Field(description="A known_hosts line that pins the CA for `host_key_alias`.")
