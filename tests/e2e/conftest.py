from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from sqlalchemy import select

from dockyard.runtimes.docker import DockerRuntime
from dockyard.store.models import Workspace
from tests.harness import Harness, make_harness


@pytest.fixture
def engine_link() -> Iterator[Path]:
    """A socket path the test can take away and give back, as if dockerd stopped and returned."""
    folder = Path(tempfile.mkdtemp(prefix="dockyard-engine-"))
    link = folder / "docker.sock"
    link.symlink_to("/var/run/docker.sock")
    yield link
    if link.is_symlink():
        link.unlink()
    folder.rmdir()


@pytest.fixture
def dh(
    tmp_path: Path, database_url: str, engine: DockerRuntime, base_image: str, engine_link: Path
) -> Iterator[Harness]:
    """A harness whose workspaces run on the real Docker engine (reached through `engine_link`)."""
    runtime = DockerRuntime(f"unix://{engine_link}", subnet_pool="10.214.0.0/16", ready_timeout=30)
    harness = make_harness(tmp_path, database_url, runtime=runtime)
    yield harness
    harness.close()
    if not engine_link.exists():
        engine_link.unlink(missing_ok=True)
        engine_link.symlink_to("/var/run/docker.sock")
    assert runtime.deployment is not None
    ids = _labelled_workspaces(runtime.deployment) & _harness_workspace_ids(harness)
    for workspace_id in ids:
        runtime.delete(workspace_id, lambda line: None)
    runtime.close()


def _labelled_workspaces(deployment: str) -> set[str]:
    """Workspaces with objects of the harness's deployment (never another server's on the shared engine)."""
    client = docker.from_env()
    selector = {"label": f"dockyard.deployment={deployment}"}
    try:
        found = {
            c.labels["dockyard.workspace.id"] for c in client.containers.list(all=True, filters=selector)
        }
        found |= {v.attrs["Labels"]["dockyard.workspace.id"] for v in client.volumes.list(filters=selector)}
        return found
    finally:
        client.close()


def _harness_workspace_ids(harness: Harness) -> set[str]:
    with harness.app.state.sessions() as db:
        return set(db.scalars(select(Workspace.id)))


@pytest.fixture
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    yield client
    client.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.docker)
