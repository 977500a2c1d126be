"""Warm networks on the real Docker engine: made ahead, labelled for their workspace, claimed, removed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from dockyard.runtimes.docker import DockerRuntime
from dockyard.runtimes.docker.naming import container_name, network_name
from dockyard.warmpool import store as warmnetworks
from dockyard.warmpool.pool import WarmPool
from dockyard_sdk import models as m
from tests.harness import Harness, make_harness, tar_gz

MANIFEST = """
name: dev
image: dockyard/base:bookworm
resources: {cpu: 1, memory: 512Mi}
network: {egress: all}
"""


@pytest.fixture
def wdh(tmp_path: Path, database_url: str, engine: DockerRuntime, base_image: str) -> Iterator[Harness]:
    runtime = DockerRuntime(engine.base_url, subnet_pool="10.219.0.0/16", ready_timeout=30)
    harness = make_harness(tmp_path, database_url, runtime=runtime, warm_networks={"open": 2, "internal": 1})
    pool = harness.app.state.background.warm_pool
    assert isinstance(pool, WarmPool)
    yield harness
    try:
        for ws in harness.admin.list_workspaces().workspaces:
            harness.admin.delete_workspace(ws.id)
            harness.await_build(ws.id, timeout=60)
        pool.sizes = {}
        pool.fill()
    finally:
        harness.close()
        runtime.close()


def _labelled_networks(
    client: docker.DockerClient, workspace_id: str
) -> list[docker.models.networks.Network]:
    return client.networks.list(filters={"label": f"dockyard.workspace.id={workspace_id}"})


def _warm_ids(harness: Harness) -> set[str]:
    with harness.app.state.sessions() as db:
        return warmnetworks.ids(db)


def test_a_create_takes_a_network_made_ahead_for_it(wdh: Harness, docker_client: docker.DockerClient) -> None:
    pool = wdh.app.state.background.warm_pool
    assert pool.fill() == 3
    warm = _warm_ids(wdh)
    assert len(warm) == 3
    for workspace_id in warm:
        [network] = _labelled_networks(docker_client, workspace_id)
        assert network.name == network_name(workspace_id)
        assert network.attrs["Labels"]["dockyard.managed"] == "true"
        assert network.attrs["Labels"]["dockyard.deployment"] == wdh.runtime.deployment
    # The pool's networks are not orphans (and other deployments' resources are not listed at all).
    assert wdh.admin.doctor().orphans == []

    wdh.admin.create_template(tar_gz({"dockyard.yaml": MANIFEST}))
    ws = wdh.await_build(wdh.admin.create_workspace(m.CreateWorkspaceRequest(template="dev", name="ws1")).id)

    assert ws.status == m.WorkspaceStatus.RUNNING, ws.status_reason
    assert ws.id in warm
    [network] = _labelled_networks(docker_client, ws.id)
    assert network.attrs["Internal"] is False
    attached = docker_client.containers.get(container_name(ws.id)).attrs["NetworkSettings"]["Networks"]
    assert list(attached) == [network.name]
    assert "Creating network" not in "\n".join(
        line.output for line in wdh.admin.build_logs(ws.latest_build.id)
    )
    assert wdh.admin.doctor().warm_networks == {"open": 1, "internal": 1}

    assert pool.fill() == 1
    wdh.admin.delete_workspace(ws.id)
    wdh.await_build(ws.id, timeout=60)
    assert _labelled_networks(docker_client, ws.id) == []

    remaining = _warm_ids(wdh)
    pool.sizes = {}
    assert pool.fill() == 3
    assert _warm_ids(wdh) == set()
    assert all(_labelled_networks(docker_client, workspace_id) == [] for workspace_id in remaining)
