"""Choosing a runtime by name (`--runtime`)."""

from __future__ import annotations

from pathlib import Path

from dockyard.errors import BadRequest
from dockyard.runtimes.base import Runtime


def make_runtime(
    name: str, *, workspace_subnets: str | None = None, disks_dir: Path | None = None
) -> Runtime:
    """`disks_dir` holds the size-limited home disks (`resources.disk`); without it the limit is not enforced."""
    if name == "docker":
        from dockyard.runtimes.docker.runtime import DockerRuntime

        return DockerRuntime(subnet_pool=workspace_subnets or None, disks_dir=disks_dir)
    raise BadRequest(f"Unknown runtime {name!r}.", detail="Available: docker.")
