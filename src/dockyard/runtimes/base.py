"""The runtime interface the provisioner drives.

Every call is idempotent: a retried or resumed build converges on the wanted state instead of failing on
"already exists" or "not found". Runtimes raise only the errors below, never their client library's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from dockyard.errors import DockyardError

# Receives one line of build output at a time (image build, pull progress, runtime steps).
LogSink = Callable[[str], None]


class RuntimeFailure(DockyardError):
    """Base of runtime failures; the message is shown to users in the build log."""

    status_code = 503


class RuntimeUnavailable(RuntimeFailure):
    """The engine cannot be reached (e.g. dockerd is not running)."""


class ImageNotFound(RuntimeFailure):
    status_code = 422


class ImageBuildFailed(RuntimeFailure):
    status_code = 422


class ContainerConflict(RuntimeFailure):
    status_code = 409


class Canceled(RuntimeFailure):
    """Raised by a runtime step when the build was canceled while it ran."""

    status_code = 409


@dataclass(frozen=True)
class ImageSpec:
    """What image a workspace runs: a named image, or a Dockerfile among the template's files."""

    template: str
    content_hash: str
    image: str | None = None
    dockerfile: str | None = None
    context: str = "."
    build_args: dict[str, str] = field(default_factory=dict)
    # tar.gz of the template's files; the build context for `dockerfile`.
    archive: bytes = b""


@dataclass(frozen=True)
class BindMount:
    source: str
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class WorkspaceSpec:
    """Everything a runtime needs to create one workspace's container, network and home volume."""

    workspace_id: str
    name: str
    owner: str
    owner_id: str
    template: str
    build_id: str
    image: str
    user: str = "dev"
    uid: int = 1000
    cpu: float = 2.0
    memory_bytes: int = 4 * 2**30
    pids: int = 1024
    # Size of the home volume's own file system; None shares the host's disk.
    disk_bytes: int | None = None
    gpu: int = 0
    sudo: bool = False
    egress: str = "all"  # none | all | allowlist
    env: dict[str, str] = field(default_factory=dict)
    # Command run as the workspace user once the container is set up; the agent in later versions.
    command: list[str] = field(default_factory=lambda: ["sleep", "infinity"])
    # Files the runtime places in the container (path -> content).
    files: dict[str, bytes] = field(default_factory=dict)
    # Host folders bind-mounted into the container: the agent's folder (script and control-plane socket).
    mounts: tuple[BindMount, ...] = ()
    # Addresses or CIDRs reachable with egress "allowlist" (runtimes that can enforce them).
    egress_allow: tuple[str, ...] = ()
    # The template's pod-spec overlay (`kubernetes.pod`, checked at push); only the Kubernetes runtime reads it.
    kubernetes_pod: dict[str, Any] = field(default_factory=dict, compare=False)


class ContainerState(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"  # exited after a stop Dockyard asked for, or created and never started
    EXITED = "exited"  # exited on its own
    OOM_KILLED = "oom_killed"
    MISSING = "missing"


@dataclass(frozen=True)
class Observation:
    workspace_id: str
    state: ContainerState
    exit_code: int | None = None
    detail: str = ""
    address: str | None = None
    # Seconds per step of the start that produced this observation (e.g. network, volume, container).
    timings: dict[str, float] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class ManagedResource:
    """A container, volume or network that carries Dockyard's labels."""

    kind: str  # container | volume | network
    name: str
    workspace_id: str


@dataclass(frozen=True)
class HostIsolation:
    """Whether the host's firewall keeps this deployment's workspaces off the host's own services."""

    enforced: bool  # the runtime can enforce it on this host (for Docker: iptables works for this process)
    error: str = ""
    # Networks of this deployment whose rules are missing (they can reach the host), by name.
    missing: tuple[str, ...] = ()
    # Rules of this deployment left for networks that no longer exist, by bridge.
    stale: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.enforced and not self.missing


@dataclass(frozen=True)
class HostCapacity:
    cpus: float
    memory_bytes: int


def network_class(egress: str) -> str:
    """Which workspaces can share a network made ahead of them: "open" has egress, "internal" has none.

    An allowlist counts as internal until its hosts are enforced (a filtering proxy or firewall rules per
    network); such a workspace gets no egress at all rather than all of it.
    """
    return "open" if egress == "all" else "internal"


class Runtime(Protocol):
    name: str
    # The id every resource this runtime makes is labelled with; it lists and removes only those.
    deployment: str | None

    def bind_deployment(self, deployment: str) -> None:
        """Label what the runtime makes with this deployment's id from now on (once, before any other call)."""

    def ping(self) -> None:
        """Raise RuntimeUnavailable unless the engine answers."""

    def capacity(self) -> HostCapacity: ...

    def ensure_image(self, spec: ImageSpec, log: LogSink) -> str:
        """Return a local image reference for the spec, pulling or building it if needed (cached by hash)."""

    def start(self, spec: WorkspaceSpec, log: LogSink) -> Observation:
        """Create or reuse network, home volume and container, and start it."""

    def stop(self, workspace_id: str, log: LogSink) -> None:
        """Stop the container, keeping it and the home volume."""

    def delete(self, workspace_id: str, log: LogSink) -> None:
        """Remove the container, the home volume and the network."""

    def prepare_network(self, workspace_id: str, network_class: str, log: LogSink) -> None:
        """Make the network of a workspace that does not exist yet, so that its start finds it ready."""

    def observe(self, workspace_id: str) -> Observation: ...

    def observe_all(self) -> dict[str, Observation]:
        """Observations for every workspace container the runtime holds, by workspace id."""

    def managed_resources(self) -> list[ManagedResource]: ...

    def remove_resource(self, resource: ManagedResource) -> None: ...

    def host_isolation(self) -> HostIsolation:
        """Check that the deployment's workspaces cannot reach the host (the host firewall's rules)."""

    def repair_host_isolation(self) -> HostIsolation:
        """Add missing host rules and remove stale ones; returns what was missing or stale before."""
