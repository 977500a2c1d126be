"""Runtime test fixtures: a real Docker engine, the base image, and workspaces that clean up after themselves.

Tests marked `docker` skip, with the reason, when no engine answers at DOCKER_HOST (or the default socket).
"""

from __future__ import annotations

import contextlib
import io
import tarfile
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dockyard.runtimes.docker import DockerRuntime
from dockyard.runtimes.plan import WorkspacePlan
from tests.docker_fixtures import SESSION_PREFIX
from tests.plans import workspace_plan

SpecFactory = Callable[..., WorkspacePlan]


def tar_gz(files: dict[str, str]) -> bytes:
    """A template archive as the provisioner hands it over: a tar.gz of the template's files."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path, content in files.items():
            data = content.encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def runtime(engine: DockerRuntime, base_image: str) -> DockerRuntime:
    return engine


@pytest.fixture
def log() -> list[str]:
    """A LogSink: pass `log.append`; the list holds what the runtime said."""
    return []


@contextlib.contextmanager
def spec_factory(runtime: DockerRuntime, base_image: str) -> Iterator[SpecFactory]:
    """Make WorkspacePlans with fresh workspace ids; every workspace made is deleted from `runtime` at the end."""
    made: list[str] = []

    def make(**overrides: Any) -> WorkspacePlan:
        workspace_id = f"{SESSION_PREFIX}-{uuid.uuid4().hex[:8]}"
        made.append(workspace_id)
        values: dict[str, Any] = {
            "workspace_id": workspace_id,
            "name": f"ws-{workspace_id}",
            "owner": "alice",
            "owner_id": "user-1",
            "template": "tmpl",
            "build_id": "build-1",
            "image": base_image,
            "cpu": 1.0,
            "memory_bytes": 256 * 2**20,
            "pids": 256,
        }
        values.update(overrides)
        return workspace_plan(**values)

    try:
        yield make
    finally:
        for workspace_id in made:
            runtime.delete(workspace_id, lambda line: None)


@pytest.fixture
def new_spec(runtime: DockerRuntime, base_image: str) -> Iterator[SpecFactory]:
    """Make a WorkspacePlan with a fresh workspace id; every workspace made here is deleted afterwards."""
    with spec_factory(runtime, base_image) as make:
        yield make
