"""The Docker Engine runtime."""

from dockyard.runtimes.docker.runtime import DockerRuntime

__all__ = ["DockerRuntime"]
