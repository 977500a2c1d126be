"""Choosing a runtime by name (`--runtime`)."""

from __future__ import annotations

import os
from pathlib import Path

from dockyard import logs
from dockyard.errors import BadRequest
from dockyard.runtimes.base import Runtime


def make_runtime(
    name: str,
    *,
    workspace_subnets: str | None = None,
    disks_dir: Path | None = None,
    host_ports: tuple[int, ...] = (),
) -> Runtime:
    """`disks_dir` holds the size-limited home disks (`resources.disk`); without it the limit is not enforced.
    `host_ports` are the host's TCP ports workspaces may reach (the network agent link's)."""
    if name == "docker":
        from dockyard.runtimes.docker.runtime import DockerRuntime

        if disks_dir is not None and os.geteuid() != 0:
            # Loop mounts need root; without them a template's disk size cannot bound its home volume.
            logs.get("dockyard.runtimes").warning(
                "not running as root: resources.disk cannot be enforced, home volumes share the host's disk"
            )
            disks_dir = None

        return DockerRuntime(
            subnet_pool=workspace_subnets or None, disks_dir=disks_dir, host_ports=host_ports
        )
    raise BadRequest(f"Unknown runtime {name!r}.", detail="Available: docker.")
