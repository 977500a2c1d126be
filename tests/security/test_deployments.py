"""Several deployments on one engine (issue 9.11): each touches only what it made.

Two `dockyard server` processes with their own data dirs are two deployments sharing the Docker engine. Each
labels everything it makes with its deployment id; `doctor` lists, and `doctor --prune` removes, only its own
orphans, so pruning one leaves the other's workspaces, volumes, networks and host rules alone. Objects without
a deployment label (made before labels existed) belong to none and are never pruned.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import docker
import pytest

from dockyard.runtimes.docker.naming import container_name, network_name, volume_name
from dockyard.sdk import models as m
from tests.live import LiveServer, start_live_server, stop_live_server
from tests.security.conftest import chain_rules

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]


@pytest.fixture
def two_servers(base_image: str) -> Iterator[tuple[LiveServer, LiveServer]]:
    first = start_live_server(subnets="10.224.0.0/16")
    try:
        second = start_live_server(subnets="10.225.0.0/16")
    except BaseException:
        stop_live_server(first)
        raise
    try:
        yield first, second
    finally:
        stop_live_server(second)
        stop_live_server(first)


def _running(server: LiveServer, name: str) -> m.Workspace:
    created = server.client.create_workspace(m.CreateWorkspaceRequest(template="base", name=name))
    workspace = server.client.get_workspace(created.id, wait="done", timeout=120)
    assert workspace.status == m.WorkspaceStatus.RUNNING, workspace.status_reason
    return workspace


def _objects(client: docker.DockerClient, workspace_id: str) -> dict[str, dict[str, str]]:
    """The workspace's container, volume and network, by kind: their labels."""
    return {
        "container": client.containers.get(container_name(workspace_id)).labels,
        "volume": client.volumes.get(volume_name(workspace_id)).attrs["Labels"],
        "network": client.networks.get(network_name(workspace_id)).attrs["Labels"],
    }


def test_pruning_one_deployment_leaves_the_others_alone(
    two_servers: tuple[LiveServer, LiveServer], docker_client: docker.DockerClient
) -> None:
    first, second = two_servers
    mine, theirs = _running(first, "mine"), _running(second, "theirs")
    first_id, second_id = first.client.doctor().deployment, second.client.doctor().deployment
    assert first_id
    assert second_id
    assert first_id != second_id
    assert {
        kind: labels["dockyard.deployment"] for kind, labels in _objects(docker_client, mine.id).items()
    } == (dict.fromkeys(["container", "volume", "network"], first_id))
    before = _objects(docker_client, theirs.id)
    assert {labels["dockyard.deployment"] for labels in before.values()} == {second_id}
    # Something the first deployment really left behind, and something from before deployment labels.
    orphan_id, legacy_id = str(uuid.uuid4()), str(uuid.uuid4())
    docker_client.networks.create(
        network_name(orphan_id),
        labels={
            "dockyard.managed": "true",
            "dockyard.workspace.id": orphan_id,
            "dockyard.deployment": first_id,
        },
        ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet="10.224.255.240/28")]),
    )
    legacy = docker_client.volumes.create(
        volume_name(legacy_id), labels={"dockyard.managed": "true", "dockyard.workspace.id": legacy_id}
    )
    try:
        report = first.client.doctor()
        assert [(o.kind, o.name) for o in report.orphans] == [("network", network_name(orphan_id))]
        assert second.client.doctor().orphans == []

        pruned = first.client.prune()

        assert [(o.kind, o.name) for o in pruned.removed] == [("network", network_name(orphan_id))]
        assert docker_client.networks.list(names=[network_name(orphan_id)]) == []
        # The second deployment's workspace is whole and still running; its host rules are in place.
        assert _objects(docker_client, theirs.id) == before
        assert docker_client.containers.get(container_name(theirs.id)).status == "running"
        assert second.client.get_workspace(theirs.id).status == m.WorkspaceStatus.RUNNING
        result = second.client.exec(theirs.id, m.ExecRequest(command="echo still here"))
        assert (result.exit_code, result.stdout) == (0, "still here\n")
        assert second.client.doctor().host_firewall == m.HostFirewallReport(ok=True)
        assert any(f"dockyard:{second_id}:{theirs.id}" in rule for rule in chain_rules())
        # Unlabelled objects belong to no deployment: listed by none, pruned by none.
        assert docker_client.volumes.get(legacy.name).name == legacy.name
        assert first.client.doctor().orphans == []
        assert second.client.doctor().orphans == []
        assert first.client.get_workspace(mine.id).status == m.WorkspaceStatus.RUNNING
    finally:
        legacy.remove(force=True)
        for network in docker_client.networks.list(names=[network_name(orphan_id)]):
            network.remove()
