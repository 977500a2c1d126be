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
    TOKEN_WRITE = "token:write"  # noqa: S105 - a scope name
    DEPLOYMENT_ADMIN = "deployment:admin"


class Role(StrEnum):
    OWNER = "owner"
    TEMPLATE_ADMIN = "template-admin"
    MEMBER = "member"


class UserStatus(StrEnum):
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


class Request(BaseModel):
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
    name: Name
    lifetime: str = Field("30d", description="How long the token is valid, e.g. 4h, 30d.")
    scopes: list[Scope] = Field(default_factory=lambda: [Scope.ALL], min_length=1)
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


# --- workspaces ----------------------------------------------------------------------------------------------


class Transition(StrEnum):
    START = "start"
    STOP = "stop"
    DELETE = "delete"


class BuildStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELING = "canceling"
    CANCELED = "canceled"


class BuildReason(StrEnum):
    INITIATOR = "initiator"
    TTL = "ttl"
    IDLE = "idle"
    AUTOSTART = "autostart"
    RECONCILE = "reconcile"


class WorkspaceStatus(StrEnum):
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


class ParameterValueItem(BaseModel):
    """Coder's `rich_parameter_values` entry."""

    name: str
    value: Any


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


class WorkspaceBuild(BaseModel):
    id: str
    workspace_id: str
    workspace_name: str
    number: int
    transition: Transition
    status: BuildStatus
    reason: BuildReason
    initiator: str | None
    template_version_id: str
    template_version_name: str
    error: str
    timings: dict[str, float] = Field(
        description="Seconds spent per phase (queue, image, network, container)."
    )
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None


class BuildLogLine(BaseModel):
    id: int
    time: datetime
    stage: str
    output: str


class WorkspaceResources(BaseModel):
    cpu: float
    memory_bytes: int
    disk: str | None
    gpu: int


class AgentConnection(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


class AgentLifecycle(StrEnum):
    CREATED = "created"
    STARTING = "starting"
    READY = "ready"
    START_ERROR = "start_error"
    START_TIMEOUT = "start_timeout"
    SHUTTING_DOWN = "shutting_down"
    OFF = "off"


class ListeningPort(BaseModel):
    port: int
    address: str = ""
    family: str = "ipv4"


class AgentStats(BaseModel):
    cpu_cores: float | None = Field(None, description="CPU cores in use, averaged since the last report.")
    memory_bytes: int | None = None
    memory_limit_bytes: int | None = None
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


class WorkspaceAgent(BaseModel):
    status: AgentConnection
    lifecycle: AgentLifecycle
    version: str = ""
    exit_code: int | None = Field(None, description="Exit code of the startup script when it failed.")
    first_connected_at: datetime | None = None
    last_connected_at: datetime | None = None
    disconnected_at: datetime | None = None
    last_seen_at: datetime | None = None
    started_at: datetime | None = None
    ready_at: datetime | None = None
    stats: AgentStats | None = None
    ports: list[ListeningPort] = Field(default_factory=list)


class TaskState(StrEnum):
    """What a coding task in a workspace is doing, as the workspace reports it."""

    WORKING = "working"
    IDLE = "idle"
    WAITING_INPUT = "waiting_input"
    DONE = "done"
    FAILED = "failed"


class TaskLink(BaseModel):
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


class Workspace(BaseModel):
    id: str
    name: str
    owner_id: str
    owner_name: str
    template_id: str
    template_name: str
    template_version_id: str
    template_version_name: str
    outdated: bool = Field(description="A newer template version is active.")
    parameters: dict[str, Any]
    status: WorkspaceStatus
    status_reason: str = Field("", description="Why the workspace is in this status, e.g. a failure.")
    latest_build: WorkspaceBuild
    ttl_ms: int | None
    deadline: datetime | None
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None
    agent: WorkspaceAgent | None = Field(
        None, description="The agent inside the workspace; none before its first start."
    )
    task: TaskStatus | None = Field(None, description="The coding task's last reported state, if any.")


class WorkspaceList(BaseModel):
    workspaces: list[Workspace]
    count: int


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
    transition: Transition
    template_version_id: str | None = Field(
        None, max_length=64, description="For start: the version to move to (`active` for the newest)."
    )


class UpdateWorkspaceRequest(Request):
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


class OrphanedResource(BaseModel):
    kind: str
    name: str
    workspace_id: str


class HostFirewallReport(BaseModel):
    """Whether the host firewall keeps this deployment's workspaces off the host's own services."""

    ok: bool = Field(description="Enforced here, and no network of this deployment is missing its rules.")
    error: str = Field("", description="Why the firewall cannot be used by the server (e.g. not root).")
    missing: list[str] = Field(
        default_factory=list, description="Networks of this deployment without host rules (before a prune)."
    )
    stale: list[str] = Field(
        default_factory=list, description="Bridges that are gone but still have this deployment's rules."
    )


class DoctorReport(BaseModel):
    runtime: str
    runtime_ok: bool
    deployment: str = Field("", description="This deployment's id, the `dockyard.deployment` label's value.")
    runtime_error: str = ""
    orphans: list[OrphanedResource]
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
    repaired: HostFirewallReport | None = Field(
        None, description="What a prune found missing or stale in the host firewall and put right."
    )


# --- connecting: exec, files, SSH -------------------------------------------------------------------------------

MAX_EXEC_OUTPUT = 16 * 2**20


class ExecRequest(Request):
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
    width: int = Field(80, ge=1, le=1000)
    height: int = Field(24, ge=1, le=1000)
    term: str = Field("xterm-256color", max_length=64, pattern=r"^[A-Za-z0-9._+-]+$")


class ExecStreamRequest(ExecRequest):
    """The first message on the exec WebSocket; `stdin`, `max_output_bytes` and `encoding` do not apply there
    (output travels as binary messages, byte for byte)."""

    pty: PtyRequest | None = Field(None, description="Run the command on a terminal of this size.")
    timeout: float | None = Field(  # type: ignore[assignment]
        None, gt=0, le=7 * 86400, description="Seconds before the command is killed; none by default."
    )


class ExecResult(BaseModel):
    exit_code: int | None = Field(description="None when the command was killed on timeout.")
    signal: str | None = Field(None, description="The signal that ended the command, e.g. KILL.")
    stdout: str = Field(description="As the request's `encoding` says: text, or base64 of the bytes.")
    stderr: str
    encoding: Literal["utf-8", "base64"] = Field("utf-8", description="The encoding of stdout and stderr.")
    lossy: bool = Field(
        False,
        description="With utf-8: stdout or stderr held bytes that are not UTF-8, shown as U+FFFD. Ask for "
        "`encoding: base64` to get them exactly.",
    )
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    timed_out: bool = Field(False, description="Killed at the timeout, with every process it started.")
    limits_hit: list[Literal["memory", "pids"]] = Field(
        default_factory=list,
        description="Workspace limits hit while the command ran: `memory` (the kernel killed a process for "
        "the memory limit), `pids` (a fork failed at the process limit). Counted for the whole workspace.",
    )
    duration_ms: float

    @property
    def truncated(self) -> bool:
        """Whether stdout or stderr was cut at `max_output_bytes`."""
        return self.stdout_truncated or self.stderr_truncated


class FileEntry(BaseModel):
    name: str
    type: str = Field(description="file, dir, symlink or other.")
    size: int
    mode: int
    mtime: float


class FileList(BaseModel):
    path: str
    entries: list[FileEntry]


class FileWritten(BaseModel):
    path: str
    size: int


class SshKey(BaseModel):
    id: str
    name: str
    fingerprint: str = Field(description="SHA256 fingerprint, as `ssh-keygen -l` prints it.")
    public_key: str
    created_at: datetime
    last_used_at: datetime | None


class CreateSshKeyRequest(Request):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")
    public_key: str = Field(min_length=16, max_length=16384, description="One OpenSSH public key line.")


class SshCertificateRequest(Request):
    public_key: str = Field(min_length=16, max_length=16384, description="The public key to certify.")
    valid_for: str = Field("16h", description="How long the certificate is valid, e.g. 16h (at most 7d).")


class SshCertificate(BaseModel):
    certificate: str = Field(description="OpenSSH user certificate (`…-cert.pub` content).")
    serial: int = Field(
        0, description="The certificate's serial, unique per certificate (0 from older servers)."
    )
    principals: list[str]
    valid_before: datetime
    ca_public_key: str


class SshGateway(BaseModel):
    """What a client needs to reach the SSH gateway and trust it without a prompt."""

    host: str
    port: int
    host_key_alias: str = Field(description="The name the gateway's host certificate is issued to.")
    ca_public_key: str
    known_hosts: str = Field(description="A known_hosts line that pins the CA for `host_key_alias`.")
