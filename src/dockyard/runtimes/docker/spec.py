"""The Docker runtime's own description of one workspace container, made from a `WorkspacePlan`.

Mounts are Docker's business: the agent's folder and the workspace's private link folder are bind mounts here,
where another runtime would use a ConfigMap and a network URL. The spec's fields are what the container's
configuration hash covers (`containers.config_hash`), so a container made from an unchanged plan is found again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dockyard.runtimes.base import RuntimeFailure
from dockyard.runtimes.docker import naming
from dockyard.runtimes.plan import AGENT_MOUNT, LINK_MOUNT, LinkKind, WorkspacePlan


@dataclass(frozen=True)
class BindMount:
    source: str
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class VolumeMount:
    """A named volume of the workspace besides its home (made labelled as the workspace's, removed with it)."""

    name: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class WorkspaceSpec:
    """Everything the engine needs to create one workspace's container, network and home volume."""

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
    # allowlist: the entries, and the resolver the container is given (the egress proxy's DNS).
    egress_allow: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    # Egress "all" on the deployment bridge (`bridge.py`): made with its network disabled, its interface plugged
    # in by the runtime after the start, its resolvers (`dns`) written by the setup step.
    bridged: bool = False
    env: dict[str, str] = field(default_factory=dict)
    # Command run as the workspace user once the container is set up: the agent, or `sleep infinity`.
    command: list[str] = field(default_factory=lambda: ["sleep", "infinity"])
    # Files placed in the container (path -> content).
    files: dict[str, bytes] = field(default_factory=dict)
    # Host folders bind-mounted into the container: the agent's folder and the workspace's link.
    mounts: tuple[BindMount, ...] = ()
    # Dev container `mounts`: named volumes of the workspace.
    volumes: tuple[VolumeMount, ...] = ()


@dataclass(frozen=True)
class AgentFolders:
    """The host's agent program folder and the root of the per-workspace link folders."""

    program: Path
    links: Path


def from_plan(plan: WorkspacePlan, agent: AgentFolders | None) -> WorkspaceSpec:
    env = dict(plan.env)
    mounts: tuple[BindMount, ...] = ()
    if plan.agent is not None:
        link = plan.agent.link
        if agent is None or (link.kind == LinkKind.NETWORK and not link.url):
            raise RuntimeFailure(f"The Docker runtime here cannot give the agent a {link.kind.value} link.")
        env.update(link.env())
        mounts = (
            BindMount(str(agent.program), AGENT_MOUNT),
            BindMount(str(agent.links / plan.workspace_id), LINK_MOUNT),
        )
    for extra in plan.mounts:
        if extra.host_path:
            mounts += (BindMount(extra.host_path, extra.target, read_only=extra.read_only),)
    volumes = tuple(
        VolumeMount(naming.extra_volume_name(plan.workspace_id, m.volume), m.target, read_only=m.read_only)
        for m in plan.mounts
        if m.volume
    )
    return WorkspaceSpec(
        workspace_id=plan.workspace_id,
        name=plan.name,
        owner=plan.owner,
        owner_id=plan.owner_id,
        template=plan.template,
        build_id=plan.build_id,
        image=plan.image,
        user=plan.home.user,
        uid=plan.home.uid,
        cpu=plan.resources.cpu,
        memory_bytes=plan.resources.memory_bytes,
        pids=plan.resources.pids,
        disk_bytes=plan.resources.disk_bytes,
        gpu=plan.resources.gpu,
        sudo=plan.home.sudo,
        egress=plan.network.egress.value,
        egress_allow=tuple(plan.network.allow),
        env=env,
        command=list(plan.workload()),
        files={path: text.encode() for path, text in plan.files.items()},
        mounts=mounts,
        volumes=volumes,
    )
