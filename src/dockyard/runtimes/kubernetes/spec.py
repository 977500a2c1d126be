"""The Kubernetes runtime's own description of one workspace pod, made from a `WorkspacePlan`.

The agent reaches the pod one of two ways. With a `network` link (the default) its program comes from a
ConfigMap and its token from the workspace's Secret, both projected at AGENT_MOUNT, and it dials DOCKYARD_URL:
any node will do. A `unix_socket` link needs the agent's folder and the workspace's link folder as hostPath
volumes, which is only correct where the pods run on the server's own host (`host_paths`); `manifests.pod`
refuses host folders otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockyard.runtimes.base import RuntimeFailure
from dockyard.runtimes.plan import AGENT_MOUNT, LINK_MOUNT, LinkKind, WorkspacePlan


@dataclass(frozen=True)
class BindMount:
    source: str
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class WorkspaceSpec:
    """Everything the runtime needs to make one workspace's pod, network policy and home claim."""

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
    # Size of the home claim; None takes the runtime's default size.
    disk_bytes: int | None = None
    gpu: int = 0
    sudo: bool = False
    egress: str = "all"  # none | all | allowlist
    env: dict[str, str] = field(default_factory=dict)
    command: list[str] = field(default_factory=lambda: ["sleep", "infinity"])
    files: dict[str, bytes] = field(default_factory=dict)
    # Host folders mounted into the pod as hostPath volumes (the agent's folder and the workspace's link).
    mounts: tuple[BindMount, ...] = ()
    # The agent's program (a ConfigMap) and token (this workspace's Secret) projected at AGENT_MOUNT.
    agent_projected: bool = False
    # Addresses or CIDRs reachable with egress "allowlist" (a NetworkPolicy's ipBlocks).
    egress_allow: tuple[str, ...] = ()
    # The template's pod-spec overlay (`kubernetes.pod`, checked at push).
    kubernetes_pod: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class AgentFolders:
    """The host's agent program folder and the root of the per-workspace link folders."""

    program: Path
    links: Path


def from_plan(plan: WorkspacePlan, agent: AgentFolders | None) -> WorkspaceSpec:
    env = dict(plan.env)
    mounts: tuple[BindMount, ...] = ()
    projected = False
    if plan.agent is not None:
        link = plan.agent.link
        if agent is None or (link.kind == LinkKind.NETWORK and not link.url):
            raise RuntimeFailure(
                f"The Kubernetes runtime here cannot give the agent a {link.kind.value} link."
            )
        env.update(link.env())
        if link.kind == LinkKind.UNIX_SOCKET:
            mounts = (
                BindMount(str(agent.program), AGENT_MOUNT),
                BindMount(str(agent.links / plan.workspace_id), LINK_MOUNT),
            )
        else:
            projected = True
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
        env=env,
        command=list(plan.workload()),
        files={path: text.encode() for path, text in plan.files.items()},
        mounts=mounts,
        agent_projected=projected,
        egress_allow=tuple(plan.network.allow),
        kubernetes_pod=dict(plan.kubernetes_pod),
    )
