"""The runtime interface the provisioner drives: a resolved plan in (`plan.py`), observations out.

Every call is idempotent: a retried or resumed build converges on the wanted state instead of failing on
"already exists" or "not found". Runtimes raise only the errors below, never their client library's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from dockyard.errors import DockyardError
from dockyard.runtimes.plan import Capabilities, WorkspacePlan

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
    # A stage of a multi-stage Dockerfile, and images whose layers the build may reuse (dev containers).
    target: str | None = None
    cache_from: tuple[str, ...] = ()
    # tar.gz of the template's files; the build context for `dockerfile`.
    archive: bytes = b""

    @classmethod
    def of(cls, plan: WorkspacePlan, archive: bytes = b"") -> ImageSpec:
        if plan.build is None:
            return cls(template=plan.template, content_hash=plan.content_hash, image=plan.image)
        return cls(
            template=plan.template,
            content_hash=plan.content_hash,
            dockerfile=plan.build.dockerfile,
            context=plan.build.context,
            build_args=dict(plan.build.args),
            archive=archive,
        )


class ContainerState(StrEnum):
    RUNNING = "running"
    # Created and on its way, but not reported running yet. A Kubernetes pod reads so until the kubelet's next
    # relist, which may come after its agent has already said hello and the start has succeeded.
    STARTING = "starting"
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


class EgressProxy(Protocol):
    """The control plane's egress proxy (`dockyard.egress`), as a runtime drives it: an `allowlist` workspace's
    only way out, listening on an address of the host that only that workspace reaches."""

    proxy_port: int
    dns_port: int
    intercept_port: int

    def open(self, workspace_id: str, *, address: str, subnet: str, allow: tuple[str, ...]) -> None:
        """Serve the workspace (whose connections come from `subnet`) on `address`; raises RuntimeFailure."""

    def close(self, workspace_id: str) -> None: ...

    def serving(self) -> set[str]:
        """The workspaces this process serves now."""


def network_class(egress: str) -> str | None:
    """Which workspaces can share a network made ahead of them: "open" has egress, "internal" has none.

    An allowlist is internal: its only way out is the egress proxy on the network's gateway. Egress "none"
    takes no network at all: its container has loopback only, and the agent, apps and SSH reach it through the
    agent's socket.
    """
    if egress == "none":
        return None
    return "open" if egress == "all" else "internal"


class Runtime(Protocol):
    name: str
    # The id every resource this runtime makes is labelled with; it lists and removes only those.
    deployment: str | None

    def bind_deployment(self, deployment: str) -> None:
        """Label what the runtime makes with this deployment's id from now on (once, before any other call)."""

    def bind_agent(self, program_dir: Path, links_dir: Path) -> None:
        """Where this host keeps the agent's program and each workspace's private link folder
        (`<links_dir>/<workspace id>`), which `unix_socket` agent links need; without it there are none."""

    def bind_egress(self, proxy: EgressProxy) -> None:
        """The egress proxy `allowlist` workspaces go out through; without one (or where the runtime cannot
        confine a workspace to it) `allowlist` is not among `capabilities().egress`."""

    def capabilities(self) -> Capabilities:
        """What this runtime can do here; callers branch on it, never on the runtime's name."""

    def ping(self) -> None:
        """Raise RuntimeUnavailable unless the engine answers."""

    def capacity(self) -> HostCapacity: ...

    def ensure_image(self, spec: ImageSpec, log: LogSink) -> str:
        """Return a local image reference for the spec, pulling or building it if needed (cached by hash)."""

    def start(
        self, plan: WorkspacePlan, log: LogSink, *, started: threading.Event | None = None
    ) -> Observation:
        """Make (or reuse) whatever runs the plan, with its home, and start it; `plan.image` is what
        `ensure_image` returned. A changed plan replaces what ran before, keeping the home.

        `started`, when given, is set by the caller once it has proof from inside the workspace that it runs
        (its agent connected): a runtime that hears of its own start late may return on it."""

    def stop(self, workspace_id: str, log: LogSink) -> None:
        """Stop the workspace, keeping its home."""

    def delete(self, workspace_id: str, log: LogSink) -> None:
        """Remove everything the runtime made for the workspace, its home included."""

    def prepare_network(self, workspace_id: str, network_class: str, log: LogSink) -> None:
        """Make the network of a workspace that does not exist yet, so that its start finds it ready
        (only where `capabilities().prepared_networks`)."""

    def observe(self, workspace_id: str) -> Observation: ...

    def agent_addresses(self, workspace_id: str) -> frozenset[str] | None:
        """The source addresses the workspace's network connections come from (empty when it is not running),
        or None when this runtime cannot tell. The hub refuses an agent connection from any other address."""

    def observe_all(self) -> dict[str, Observation]:
        """Observations for every workspace container the runtime holds, by workspace id."""

    def managed_resources(self) -> list[ManagedResource]: ...

    def remove_resource(self, resource: ManagedResource) -> None: ...

    def host_isolation(self) -> HostIsolation:
        """Check that the deployment's workspaces cannot reach the host (the host firewall's rules)."""

    def repair_host_isolation(self) -> HostIsolation:
        """Add missing host rules and remove stale ones; returns what was missing or stale before."""
