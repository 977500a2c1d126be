"""Choosing a runtime by name (`--runtime`)."""

from __future__ import annotations

import os
from pathlib import Path

from dockyard import logs
from dockyard.config import Settings
from dockyard.errors import BadRequest
from dockyard.runtimes.base import Runtime
from dockyard.runtimes.kubernetes.options import KubernetesOptions


def make_runtime(
    name: str,
    *,
    workspace_subnets: str | None = None,
    workspace_bridge: str = "auto",
    disks_dir: Path | None = None,
    host_ports: tuple[int, ...] = (),
    kubernetes: KubernetesOptions | None = None,
) -> Runtime:
    """`disks_dir` holds the size-limited home disks (`resources.disk`); without it the limit is not enforced.
    `host_ports` are the host's TCP ports workspaces may reach (the network agent link's)."""
    if name == "kubernetes":
        # Imported here: the client library loads a few hundred modules a Docker deployment never uses.
        from dockyard.runtimes.kubernetes.runtime import KubernetesRuntime

        return KubernetesRuntime(kubernetes or KubernetesOptions())
    if name == "docker":
        from dockyard.runtimes.docker.bridge import MODES
        from dockyard.runtimes.docker.runtime import DockerRuntime

        if disks_dir is not None and os.geteuid() != 0:
            # Loop mounts need root; without them a template's disk size cannot bound its home volume.
            logs.get("dockyard.runtimes").warning(
                "not running as root: resources.disk cannot be enforced, home volumes share the host's disk"
            )
            disks_dir = None

        if workspace_bridge not in MODES:
            raise BadRequest(
                f"Unknown workspace bridge mode {workspace_bridge!r}.",
                detail=f"Available: {', '.join(MODES)}.",
            )
        return DockerRuntime(
            subnet_pool=workspace_subnets or None,
            disks_dir=disks_dir,
            host_ports=host_ports,
            workspace_bridge=workspace_bridge,
        )
    raise BadRequest(f"Unknown runtime {name!r}.", detail="Available: docker, kubernetes.")


def kubernetes_options(settings: Settings) -> KubernetesOptions:
    return KubernetesOptions(
        kubeconfig=settings.kubeconfig or None,
        namespace=settings.kubernetes_namespace,
        storage_class=settings.kubernetes_storage_class,
        runtime_class=settings.kubernetes_runtime_class,
        image_pull_secrets=tuple(settings.kubernetes_image_pull_secrets),
        host_paths=settings.kubernetes_host_paths,
        allow_privileged=settings.kubernetes_allow_privileged,
        policies_enforced=settings.kubernetes_policies_enforced,
    )


def runtime_for(settings: Settings) -> Runtime:
    """The runtime the settings name, with their options."""
    return make_runtime(
        settings.runtime,
        workspace_subnets=settings.workspace_subnets,
        workspace_bridge=settings.workspace_bridge,
        disks_dir=settings.disks_dir,
        host_ports=settings.agent_url_ports,
        kubernetes=kubernetes_options(settings),
    )
