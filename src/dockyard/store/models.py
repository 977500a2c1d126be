"""SQLAlchemy models. The schema is changed only through Alembic migrations in `store/migrations`."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from dockyard.store.types import UTCDateTime, utcnow

# Named constraints keep Alembic migrations deterministic across SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[str]: JSON()}


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    username: Mapped[str] = mapped_column(String(32), unique=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    last_seen_at: Mapped[datetime | None]


class ApiToken(Base):
    __tablename__ = "api_tokens"
    __table_args__ = (UniqueConstraint("user_id", "name"),)

    # The public half of the token (`dy_<id>_<secret>`): lookups go through this primary key, never a scan.
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    hashed_secret: Mapped[bytes] = mapped_column(LargeBinary(32))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(32))
    scopes: Mapped[list[str]]
    allow_list: Mapped[list[str]]
    login_type: Mapped[str] = mapped_column(String(16), default="token")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    # Sees (and acts on) only the workspaces it created itself.
    own_workspaces_only: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    # `task-branch`: workspaces this token creates push only their task branch (docs/SECURITY.md).
    git_push: Mapped[str] = mapped_column(String(16), default="any", server_default="any")

    user: Mapped[User] = relationship(lazy="joined")


class TemplateArchive(Base):
    """Template files by content hash: identical pushes share one row."""

    __tablename__ = "template_archives"

    content_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Template(Base):
    __tablename__ = "templates"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    name: Mapped[str] = mapped_column(String(32))
    display_name: Mapped[str] = mapped_column(String(64), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    icon: Mapped[str] = mapped_column(String(512), default="")
    active_version_id: Mapped[str | None] = mapped_column(
        ForeignKey("template_versions.id", use_alter=True, ondelete="SET NULL")
    )
    created_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    # Loaded only on purpose: listing templates reads versions from the service's cache instead.
    active_version: Mapped[TemplateVersion | None] = relationship(
        foreign_keys=[active_version_id], post_update=True, lazy="select"
    )


class TemplateVersion(Base):
    __tablename__ = "template_versions"
    __table_args__ = (
        UniqueConstraint("template_id", "number"),
        UniqueConstraint("template_id", "content_hash"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    template_id: Mapped[str] = mapped_column(ForeignKey("templates.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(ForeignKey("template_archives.content_hash"))
    manifest: Mapped[dict[str, Any]]
    files: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    message: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Workspace(Base):
    __tablename__ = "workspaces"
    __table_args__ = (
        # A deleted workspace frees its name for a new one.
        Index(
            "uq_workspaces_owner_name_live",
            "owner_id",
            "name",
            unique=True,
            sqlite_where=text("deleted = 0"),
            postgresql_where=text("deleted = false"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    template_id: Mapped[str] = mapped_column(ForeignKey("templates.id"), index=True)
    template_version_id: Mapped[str] = mapped_column(ForeignKey("template_versions.id"))
    name: Mapped[str] = mapped_column(String(32))
    parameters: Mapped[dict[str, Any]]
    deadline: Mapped[datetime | None]
    ttl_seconds: Mapped[int | None]
    idle_timeout_seconds: Mapped[int | None]
    autostart_schedule: Mapped[str | None] = mapped_column(String(128))
    deleted: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    last_used_at: Mapped[datetime | None]
    # What the reconciler last saw in the runtime when it disagrees with the latest build (e.g. "oom_killed").
    drift_state: Mapped[str | None] = mapped_column(String(32))
    drift_reason: Mapped[str | None] = mapped_column(Text)
    drift_at: Mapped[datetime | None]
    # The coding task's state as the workspace last reported it (`dockyard-agent report`, or the API).
    task_state: Mapped[str | None] = mapped_column(String(16))
    task_summary: Mapped[str | None] = mapped_column(Text)
    task_links: Mapped[list[dict[str, str]] | None] = mapped_column(JSON)
    task_source: Mapped[str | None] = mapped_column(String(16))
    task_updated_at: Mapped[datetime | None]
    # What last_used_at was about (`ssh`, `exec`, `files`, …): why the workspace counts as active.
    last_activity_reason: Mapped[str | None] = mapped_column(String(32))
    # The automatic stop the last warning announced; a later one (after activity) is warned about again.
    stop_warned_for: Mapped[datetime | None]
    autostart_timezone: Mapped[str | None] = mapped_column(String(64))
    autostart_next_at: Mapped[datetime | None]
    # Which API token created it: per-token quotas and `own_workspaces_only` tokens count by this.
    created_by_token_id: Mapped[str | None] = mapped_column(String(16), index=True)
    # `task-branch` when the token that created it was limited so: kept on the row, so the limit outlives the
    # token and holds whoever starts the workspace later.
    git_push: Mapped[str] = mapped_column(String(16), default="any", server_default="any")
    # The rendered template's resources at creation, so quotas add them up without rendering every template.
    cpu_millis: Mapped[int | None] = mapped_column(Integer)
    memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    # Set while the workspace is an unclaimed warm pool member: the preset it was made for (warmpool/prebuilds.py).
    # A claim clears it in the same conditional UPDATE that moves the owner, so a member is claimed once.
    prebuild_preset: Mapped[str | None] = mapped_column(String(64), index=True)

    owner: Mapped[User] = relationship(lazy="joined")
    template: Mapped[Template] = relationship(lazy="joined")


class WorkspaceBuild(Base):
    """One attempt to apply a transition; it is also the provisioner's job."""

    __tablename__ = "workspace_builds"
    __table_args__ = (
        UniqueConstraint("workspace_id", "number"),
        Index("ix_workspace_builds_queue", "status", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    transition: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    reason: Mapped[str] = mapped_column(String(16), default="initiator")
    initiator_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    template_version_id: Mapped[str] = mapped_column(ForeignKey("template_versions.id"))
    parameters: Mapped[dict[str, Any]]
    error: Mapped[str] = mapped_column(Text, default="")
    timings: Mapped[dict[str, Any]]
    # A start build's resolved plan (runtimes/plan.py), rendered once when its worker first runs it.
    plan: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # For a workspace's first build (create or claim): how it became ready (`cold`, `warm_network`,
    # `pool_claim`), so the agent's `ready` adds the create-to-ready time to the timings and the histogram.
    ready_path: Mapped[str | None] = mapped_column(String(16))
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    worker: Mapped[str | None] = mapped_column(String(128))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    heartbeat_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]


class BuildLog(Base):
    __tablename__ = "build_logs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    build_id: Mapped[str] = mapped_column(ForeignKey("workspace_builds.id", ondelete="CASCADE"), index=True)
    time: Mapped[datetime] = mapped_column(default=utcnow)
    stage: Mapped[str] = mapped_column(String(32))
    output: Mapped[str] = mapped_column(Text)


class AuditLog(Base):
    __tablename__ = "audit_logs"
    __table_args__ = (Index("ix_audit_logs_resource", "resource_type", "resource_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    user_id: Mapped[str | None] = mapped_column(String(36), index=True)
    username: Mapped[str] = mapped_column(String(32), default="")
    action: Mapped[str] = mapped_column(String(64), index=True)
    resource_type: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str] = mapped_column(String(64), default="")
    resource_name: Mapped[str] = mapped_column(String(128), default="")
    ip: Mapped[str] = mapped_column(String(64), default="")
    status_code: Mapped[int] = mapped_column(Integer, default=200)
    detail: Mapped[dict[str, Any]]


class WorkspaceAgent(Base):
    """What the control plane knows of the agent inside a workspace; one row per workspace, reset each start."""

    __tablename__ = "workspace_agents"

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    # The build whose container this agent runs in; a start build resets the row.
    build_id: Mapped[str | None] = mapped_column(String(36))
    connection: Mapped[str] = mapped_column(String(16), default="connecting")
    lifecycle: Mapped[str] = mapped_column(String(16), default="created")
    version: Mapped[str] = mapped_column(String(32), default="")
    exit_code: Mapped[int | None] = mapped_column(Integer)
    # Why startup failed, in one line, when the agent knows better than an exit code (a failed clone).
    error: Mapped[str | None] = mapped_column(Text)
    first_connected_at: Mapped[datetime | None]
    last_connected_at: Mapped[datetime | None]
    disconnected_at: Mapped[datetime | None]
    last_seen_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    ready_at: Mapped[datetime | None]
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    ports: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SshKey(Base):
    """A user's registered SSH public key; the gateway authenticates with it."""

    __tablename__ = "ssh_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    # "<algorithm> <base64>" without the comment; SHA256 fingerprints are unique across users.
    public_key: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]

    __table_args__ = (UniqueConstraint("user_id", "name"),)


class DeploymentKey(Base):
    """Secrets the deployment generates once and every replica shares: the SSH CA, host and agent-token keys."""

    __tablename__ = "deployment_keys"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WarmNetwork(Base):
    """A network made ahead of demand for the workspace that will carry this id.

    Creating a bridge network is the one step of a start the engine serialises (about 0.1 s each), so a burst
    of creates queues behind it. The network is named and labelled for `id` from the start; the create that
    claims the row becomes the workspace with that id, so it still gets a network of its own.
    """

    __tablename__ = "warm_networks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    # "internal" or "open": which workspaces can use it (see runtimes.base.network_class).
    network_class: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The row is written before its network is made (so a network never exists without one); only a made
    # network may be claimed, or the claiming build would make a second network of the same name.
    ready: Mapped[bool] = mapped_column(default=False, server_default=text("false"))


class DevcontainerStep(Base):
    """One run of a dev container lifecycle hook in a workspace.

    Create hooks (onCreate, updateContent, postCreate) count as done for the workspace once a run succeeded,
    whatever container it ran in, so a recreated container does not run them again; start hooks count per
    start build. Recorded here rather than as marker files in the home volume, which the user can delete.
    """

    __tablename__ = "devcontainer_steps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    build_id: Mapped[str] = mapped_column(String(36))
    hook: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))  # running | succeeded | failed
    exit_code: Mapped[int | None] = mapped_column(Integer)
    output: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class Replica(Base):
    """A server process that holds agent connections, and how the other replicas reach it to relay streams."""

    __tablename__ = "replicas"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    relay_url: Mapped[str] = mapped_column(String(500))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Refreshed every few seconds; a replica silent for longer than tunnel/replicas.STALE_AFTER is dead.
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)


class AgentSession(Base):
    """Which replica holds a workspace's agent control connection (at most one at a time)."""

    __tablename__ = "agent_sessions"

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    replica_id: Mapped[str] = mapped_column(String(64), index=True)
    connected_at: Mapped[datetime] = mapped_column(default=utcnow)


class Quota(Base):
    """Limits for a user or an API token; a missing row or a null column means no limit."""

    __tablename__ = "quotas"

    subject_type: Mapped[str] = mapped_column(String(8), primary_key=True)
    subject_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    max_workspaces: Mapped[int | None] = mapped_column(Integer)
    max_cpu_millis: Mapped[int | None] = mapped_column(Integer)
    max_memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    creates_per_minute: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class IdempotencyKey(Base):
    """A create's `Idempotency-Key`: the unique pair is what makes concurrent retries make one workspace."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("user_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(36))
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    workspace_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class GitCredential(Base):
    """A user's credential for one git host, encrypted with the deployment's git key (`gitauth/credentials.py`).
    Released only to agents of that user's workspaces whose repository is on that host."""

    __tablename__ = "git_credentials"
    __table_args__ = (UniqueConstraint("user_id", "host"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # As git names it to a credential helper: lower-case host, with `:port` when not the default.
    host: Mapped[str] = mapped_column(String(255))
    username: Mapped[str] = mapped_column(String(255))
    secret: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]


class Webhook(Base):
    """An outgoing webhook: task and workspace status changes of its user's workspaces are posted to `url`,
    signed with `secret` (`webhooks/`)."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(String(128))
    # `active`, or `failing` after too many deliveries in a row failed (a later success makes it active again).
    status: Mapped[str] = mapped_column(String(16), default="active")
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_delivery_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # A token's webhook: only events of the workspaces that token created (`workspaces.created_by_token_id`).
    token_id: Mapped[str | None] = mapped_column(
        ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True, default=None
    )


class EgressEvent(Base):
    """One connection (or DNS question) of an `allowlist` workspace through the egress proxy, allowed or not
    (`egress/`)."""

    __tablename__ = "egress_events"
    __table_args__ = (Index("ix_egress_events_workspace_id_id", "workspace_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    time: Mapped[datetime] = mapped_column(default=utcnow)
    # `connect` (HTTP CONNECT), `http` (a plain HTTP request) or `dns`.
    protocol: Mapped[str] = mapped_column(String(16))
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer, default=0)
    # `allowed`, `denied` (not in the allow-list) or `failed` (allowed, but the upstream could not be reached).
    decision: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(255), default="")
