"""Choosing a runtime by name (`--runtime`)."""

from __future__ import annotations

from dockyard.errors import BadRequest
from dockyard.runtimes.base import Runtime


def make_runtime(name: str, *, workspace_subnets: str | None = None) -> Runtime:
    if name == "docker":
        from dockyard.runtimes.docker.runtime import DockerRuntime

        return DockerRuntime(subnet_pool=workspace_subnets or None)
    raise BadRequest(f"Unknown runtime {name!r}.", detail="Available: docker.")
