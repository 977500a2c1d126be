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

from dockyard.runtimes.base import ContainerConflict, ManagedResource
from dockyard.runtimes.docker import DockerRuntime
from dockyard.runtimes.docker.naming import bridge_network_name, container_name, network_name, volume_name
from dockyard.runtimes.plan import WorkspacePlan
from dockyard_sdk import models as m
from tests.docker_fixtures import SESSION_PREFIX
from tests.live import LiveServer, start_live_server, stop_live_server
from tests.plans import workspace_plan
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


def _objects(server: LiveServer, client: docker.DockerClient, workspace_id: str) -> dict[str, dict[str, str]]:
    """The workspace's container, volume and network (its own, or the deployment bridge it is plugged into), by
    kind: their labels."""
    report = server.client.doctor()
    network = bridge_network_name(report.deployment) if report.shared_bridge else network_name(workspace_id)
    return {
        "container": client.containers.get(container_name(workspace_id)).labels,
        "volume": client.volumes.get(volume_name(workspace_id)).attrs["Labels"],
        "network": client.networks.get(network).attrs["Labels"],
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
        kind: labels["dockyard.deployment"]
        for kind, labels in _objects(first, docker_client, mine.id).items()
    } == (dict.fromkeys(["container", "volume", "network"], first_id))
    before = _objects(second, docker_client, theirs.id)
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
        # Outside both servers' pools, so that no network of theirs can hold it already.
        ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet="10.228.255.240/28")]),
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
        assert _objects(second, docker_client, theirs.id) == before
        assert docker_client.containers.get(container_name(theirs.id)).status == "running"
        assert second.client.get_workspace(theirs.id).status == m.WorkspaceStatus.RUNNING
        result = second.client.exec(theirs.id, m.ExecRequest(command="echo still here"))
        assert (result.exit_code, result.stdout) == (0, "still here\n")
        assert second.client.doctor().host_firewall == m.HostFirewallReport(ok=True)
        # On the deployment bridge the rule names the bridge rather than the workspace.
        named = "bridge" if second.client.doctor().shared_bridge else theirs.id
        assert any(f"dockyard:{second_id}:{named}" in rule for rule in chain_rules())
        # Unlabelled objects belong to no deployment: listed by none, pruned by none.
        assert docker_client.volumes.get(legacy.name).name == legacy.name
        assert first.client.doctor().orphans == []
        assert second.client.doctor().orphans == []
        assert first.client.get_workspace(mine.id).status == m.WorkspaceStatus.RUNNING
    finally:
        legacy.remove(force=True)
        for network in docker_client.networks.list(names=[network_name(orphan_id)]):
            network.remove()


@pytest.fixture
def workspace_spec(engine: DockerRuntime, base_image: str) -> Iterator[WorkspacePlan]:
    spec = workspace_plan(
        workspace_id=f"{SESSION_PREFIX}-dep-{uuid.uuid4().hex[:8]}",
        name="dep",
        owner="alice",
        owner_id="user-1",
        template="t",
        build_id="b1",
        image=base_image,
        memory_bytes=256 * 2**20,
    )
    yield spec
    client = engine.client
    for container in client.containers.list(all=True, filters={"name": container_name(spec.workspace_id)}):
        container.remove(force=True)
    for volume in client.volumes.list(filters={"name": volume_name(spec.workspace_id)}):
        volume.remove(force=True)
    for network in client.networks.list(names=[network_name(spec.workspace_id)]):
        network.remove()
    engine.repair_host_isolation()


def test_objects_from_before_deployment_labels_are_taken_over_by_their_workspaces_start(
    engine: DockerRuntime, workspace_spec: WorkspacePlan
) -> None:
    client, spec = engine.client, workspace_spec
    old_labels = {"dockyard.managed": "true", "dockyard.workspace.id": spec.workspace_id}
    network = client.networks.create(network_name(spec.workspace_id), labels=old_labels, internal=True)
    volume = client.volumes.create(volume_name(spec.workspace_id), labels=old_labels)
    client.containers.run(
        spec.image,
        ["sh", "-c", "echo kept > /home/marker"],
        volumes={volume.name: {"bind": "/home"}},
        remove=True,
    )
    client.containers.create(
        spec.image,
        ["sleep", "infinity"],
        name=container_name(spec.workspace_id),
        labels=old_labels,
        network=network.name,
    )

    # Observed (its workspace may be running), never listed as this deployment's (nor pruned).
    assert spec.workspace_id in engine.observe_all()
    assert [r for r in engine.managed_resources() if r.workspace_id == spec.workspace_id] == []

    log: list[str] = []
    engine.start(spec, log.append)

    assert f"Removing container {container_name(spec.workspace_id)}: it has no deployment" in log
    assert f"Recreating network {network_name(spec.workspace_id)}: it has no deployment" in log
    container = client.containers.get(container_name(spec.workspace_id))
    assert container.labels["dockyard.deployment"] == engine.deployment
    assert client.networks.get(network_name(spec.workspace_id)).attrs["Labels"]["dockyard.deployment"] == (
        engine.deployment
    )
    # The home volume is the same one, data and all, still unlabelled.
    assert container.exec_run(["cat", "/home/dev/marker"]).output == b"kept\n"
    assert "dockyard.deployment" not in client.volumes.get(volume.name).attrs["Labels"]


def test_another_deployments_objects_are_refused_and_left_alone(
    engine: DockerRuntime, workspace_spec: WorkspacePlan
) -> None:
    client, spec = engine.client, workspace_spec
    theirs = {
        "dockyard.managed": "true",
        "dockyard.workspace.id": spec.workspace_id,
        "dockyard.deployment": "another-deployment",
    }
    network = client.networks.create(network_name(spec.workspace_id), labels=theirs)

    with pytest.raises(ContainerConflict) as started:
        engine.start(spec, lambda line: None)
    with pytest.raises(ContainerConflict) as deleted:
        engine.delete(spec.workspace_id, lambda line: None)
    engine.remove_resource(ManagedResource("network", network.name, spec.workspace_id))

    message = f"Network {network.name} belongs to another Dockyard deployment on this engine."
    assert (started.value.message, deleted.value.message) == (message, message)
    assert started.value.detail == f"deployment another-deployment, this one {engine.deployment}"
    assert client.networks.get(network.name).attrs["Labels"] == theirs
    assert client.containers.list(all=True, filters={"name": container_name(spec.workspace_id)}) == []
