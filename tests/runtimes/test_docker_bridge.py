"""The deployment bridge on the real engine: egress-"all" workspaces plugged in by the runtime, isolated from each
other and from the host, found again by a restarted server, and a bridge that stays the deployment's."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from dockyard.runtimes.base import ContainerState, RuntimeFailure
from dockyard.runtimes.docker import DockerRuntime, bridge
from dockyard.runtimes.docker.naming import bridge_name, bridge_network_name, container_name, network_name
from tests.docker_fixtures import SESSION_DEPLOYMENT
from tests.plans import replaced
from tests.runtimes.conftest import SpecFactory, spec_factory

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(os.geteuid() != 0, reason="plugging veths into containers needs root"),
]

SUBNETS = "10.229.0.0/16"
# Answers each connection with "hello", as the workspace user: what a neighbour must not reach.
SERVE = (
    "import socket, sys\n"
    "s = socket.create_server(('0.0.0.0', int(sys.argv[1])))\n"
    "while True:\n"
    "    c, _ = s.accept(); c.sendall(b'hello'); c.close()\n"
)
DIAL = (
    "import socket, sys\n"
    "try:\n"
    "    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)\n"
    "    print(c.recv(5).decode() or 'connected')\n"
    "except OSError as exc:\n"
    "    print(type(exc).__name__)\n"
)


@pytest.fixture
def bridged(base_image: str) -> Iterator[DockerRuntime]:
    """A runtime of a deployment of its own that puts egress-"all" workspaces on the shared bridge."""
    deployment = f"{SESSION_DEPLOYMENT}-br{uuid.uuid4().hex[:4]}"
    runtime = DockerRuntime(deployment=deployment, workspace_bridge="shared", subnet_pool=SUBNETS)
    yield runtime
    for resource in runtime.managed_resources():
        runtime.remove_resource(resource)
    for network in runtime.client.networks.list(names=[bridge_network_name(deployment)]):
        network.remove()
        assert runtime.isolation is not None
        runtime.isolation.release(str(network.id))
    runtime.close()


@pytest.fixture
def bridged_spec(bridged: DockerRuntime, base_image: str) -> Iterator[SpecFactory]:
    with spec_factory(bridged, base_image) as make:
        yield make


def _exec(runtime: DockerRuntime, workspace_id: str, *argv: str, user: str = "dev") -> str:
    container = runtime.client.containers.get(container_name(workspace_id))
    code, output = container.exec_run(list(argv), user=user)
    assert code == 0, output
    return bytes(output).decode().strip()


def _shared_network(runtime: DockerRuntime) -> Any:
    assert runtime.deployment is not None
    return runtime.client.networks.get(bridge_network_name(runtime.deployment))


def test_egress_all_workspaces_join_the_deployment_bridge_through_ports_the_runtime_plugs_in(
    bridged: DockerRuntime, bridged_spec: SpecFactory
) -> None:
    first, second = bridged_spec(), bridged_spec()
    log: list[str] = []

    observed = [bridged.start(first, log.append), bridged.start(second, log.append)]

    assert [o.state for o in observed] == [ContainerState.RUNNING] * 2
    network = _shared_network(bridged)
    subnet = ipaddress.ip_network(network.attrs["IPAM"]["Config"][0]["Subnet"])
    assert subnet.subnet_of(ipaddress.ip_network(SUBNETS))  # type: ignore[arg-type]
    assert network.attrs["Options"]["com.docker.network.bridge.enable_icc"] == "false"
    assert network.attrs["Labels"]["dockyard.role"] == bridge.ROLE
    addresses = [o.address for o in observed]
    assert len(set(addresses)) == 2
    assert all(ipaddress.ip_address(a) in subnet for a in addresses)
    assert f"Plugged into the deployment bridge at {addresses[0]}" in log
    # The engine made no network for either, and knows of no endpoint on the bridge: the ports are the runtime's.
    assert bridged.client.networks.list(names=[network_name(first.workspace_id)]) == []
    attrs = bridged.client.api.inspect_container(container_name(first.workspace_id))
    assert attrs["Config"]["NetworkDisabled"] is True
    assert attrs["Config"]["Labels"]["dockyard.network"] == "bridged"
    # Inside: eth0 with the reported address, a default route, the MAC made from the address, a resolver.
    inside = _exec(bridged, first.workspace_id, "cat", "/sys/class/net/eth0/address", "/etc/resolv.conf")
    assert bridge.mac_of(ipaddress.IPv4Address(addresses[0])) in inside
    assert "nameserver " in inside
    # Its name resolves to that address, as on Docker's own networks; localhost stays on loopback.
    resolved = _exec(bridged, first.workspace_id, "getent", "hosts", first.name, "localhost").splitlines()
    assert resolved[0].split() == [addresses[0], first.name]
    assert resolved[1].split()[0] in ("127.0.0.1", "::1")
    # No IPv6: the bridge's link-local address is no way around the host firewall's IPv4 rules.
    assert _exec(bridged, first.workspace_id, "cat", "/proc/sys/net/ipv6/conf/eth0/disable_ipv6") == "1"
    route = _exec(bridged, first.workspace_id, "cat", "/proc/net/route")
    assert any(line.split()[:2] == ["eth0", "00000000"] for line in route.splitlines())
    # Each host end is an isolated port of the bridge, named for its address, its alias the workspace.
    ports = subprocess.run(
        ["bridge", "-d", "link", "show", "master", bridge_name(network.id)], capture_output=True, text=True
    ).stdout
    assert ports.count("isolated on") == 2
    assert bridged.observe(second.workspace_id).address == addresses[1]
    assert {w: o.address for w, o in bridged.observe_all().items()} == {
        first.workspace_id: addresses[0],
        second.workspace_id: addresses[1],
    }


def test_workspaces_on_the_bridge_cannot_reach_each_other_or_the_host_but_the_host_reaches_them(
    bridged: DockerRuntime, bridged_spec: SpecFactory
) -> None:
    first, second = bridged_spec(), bridged_spec()
    bridged.start(first, lambda line: None)
    target = bridged.start(second, lambda line: None).address
    assert target is not None
    container = bridged.client.containers.get(container_name(second.workspace_id))
    container.exec_run(["python3", "-c", SERVE, "8000"], user="dev", detach=True)
    # Docker gives the bridge the subnet's first address when the pool chose the subnet.
    gateway = str(
        next(ipaddress.ip_network(_shared_network(bridged).attrs["IPAM"]["Config"][0]["Subnet"]).hosts())
    )

    # The host (the control plane's side) reaches the workspace: proof the server listens.
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection((target, 8000), timeout=3) as connection:
                assert connection.recv(5) == b"hello"
            break
        except ConnectionRefusedError:
            assert time.monotonic() < deadline, "the workspace's server never listened"
            time.sleep(0.1)

    # A neighbour on the same bridge does not: no frame crosses between isolated ports, and the engine's
    # FORWARD rule drops what is routed back into the bridge.
    assert _exec(bridged, first.workspace_id, "python3", "-c", DIAL, target, "8000") in (
        "timeout",
        "TimeoutError",
    )
    # Nor does it reach the host's own services through the gateway: the host firewall refuses them.
    assert (
        _exec(bridged, first.workspace_id, "python3", "-c", DIAL, gateway, "22") == "ConnectionRefusedError"
    )


def test_a_resumed_workspace_is_plugged_in_again_and_a_new_server_finds_its_address(
    bridged: DockerRuntime, bridged_spec: SpecFactory
) -> None:
    spec = bridged_spec()
    address = bridged.start(spec, lambda line: None).address
    bridged.stop(spec.workspace_id, lambda line: None)
    assert bridged.observe(spec.workspace_id).state is ContainerState.STOPPED

    log: list[str] = []
    resumed = bridged.start(spec, log.append)

    # The same container (its state kept), a new port; the address is derived from the workspace first.
    assert "Creating container" not in "\n".join(log)
    assert resumed.address == address
    assert _exec(bridged, spec.workspace_id, "cat", "/sys/class/net/eth0/operstate") == "up"
    assert bridged.deployment is not None
    restarted = DockerRuntime(deployment=bridged.deployment, workspace_bridge="shared", subnet_pool=SUBNETS)
    try:
        assert restarted.observe(spec.workspace_id).address == address
        assert restarted.agent_addresses(spec.workspace_id) == frozenset({address})
    finally:
        restarted.close()


def test_moving_between_a_network_of_its_own_and_the_bridge_recreates_the_container(
    bridged: DockerRuntime, bridged_spec: SpecFactory
) -> None:
    spec = bridged_spec()
    own = DockerRuntime(deployment=bridged.deployment, workspace_bridge="own", subnet_pool=SUBNETS)
    try:
        own.start(spec, lambda line: None)
        own.stop(spec.workspace_id, lambda line: None)
        assert [n.name for n in own.client.networks.list(names=[network_name(spec.workspace_id)])] == [
            network_name(spec.workspace_id)
        ]
    finally:
        own.close()

    log: list[str] = []
    observation = bridged.start(spec, log.append)

    assert observation.state is ContainerState.RUNNING
    assert observation.address
    assert f"Removing container {container_name(spec.workspace_id)}: its configuration changed" in log
    # The network it had is gone with it: nothing is left that it could be joined to again.
    assert bridged.client.networks.list(names=[network_name(spec.workspace_id)]) == []
    # Allow-lists keep their own internal network (the egress proxy's), egress none has none.
    assert bridged.start(replaced(spec, egress="none"), lambda line: None).address is None


def test_the_bridge_is_an_orphan_only_once_no_container_is_made_for_it_and_is_made_again_after_a_prune(
    bridged: DockerRuntime, bridged_spec: SpecFactory
) -> None:
    first = bridged_spec()
    bridged.start(first, lambda line: None)
    name = bridge_network_name(str(bridged.deployment))
    assert bridged.capabilities().bridged_egress
    # Its bridge gets the host firewall's rules, named for the bridge rather than a workspace.
    assert bridged.host_isolation().ok
    device = bridge_name(_shared_network(bridged).id)
    assert device in bridged.isolation.firewall.isolated_bridges()  # type: ignore[union-attr]
    # A stopped container still needs it at its next start.
    bridged.stop(first.workspace_id, lambda line: None)
    assert all(r.name != name for r in bridged.managed_resources())

    bridged.delete(first.workspace_id, lambda line: None)
    [orphan] = [r for r in bridged.managed_resources() if r.name == name]
    assert (orphan.kind, orphan.workspace_id) == ("network", "")
    bridged.remove_resource(orphan)

    assert bridged.client.networks.list(names=[name]) == []
    assert device not in bridged.isolation.firewall.isolated_bridges()  # type: ignore[union-attr]
    second = bridged_spec()
    observation = bridged.start(second, lambda line: None)
    assert observation.state is ContainerState.RUNNING
    assert observation.address
    assert bridge_name(_shared_network(bridged).id) != device


def test_a_container_whose_interface_never_arrives_fails_its_setup_with_the_reason(
    bridged: DockerRuntime, bridged_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = bridged_spec()
    monkeypatch.setattr(bridge, "WAIT_SECONDS", 1)

    def refuse(*args: Any) -> str:
        raise RuntimeFailure("Plugging the workspace into its bridge failed: no")

    assert bridged.plugs is not None
    monkeypatch.setattr(bridged.plugs, "attach", refuse)
    with pytest.raises(RuntimeFailure, match="Plugging the workspace into its bridge failed"):
        bridged.start(spec, lambda line: None)
    # Killed, not left waiting for an interface.
    assert bridged.observe(spec.workspace_id).state is not ContainerState.RUNNING

    # The setup step's own bound: started by hand, without the runtime, it gives up with the reason.
    container = bridged.client.containers.get(container_name(spec.workspace_id))
    container.start()
    assert container.wait(timeout=30)["StatusCode"] == 4
    assert "network interface did not arrive within 1 s" in container.logs().decode()


def test_the_mode_is_checked() -> None:
    with pytest.raises(ValueError, match="workspace_bridge must be one of auto, shared, own"):
        DockerRuntime(workspace_bridge="sideways")
    assert (
        bridge.unusable_reason("tcp://10.0.0.5:2376")
        == "the engine at tcp://10.0.0.5:2376 is not on this host"
    )


def test_a_running_container_whose_plug_did_not_finish_is_plugged_in_afresh(
    bridged: DockerRuntime, bridged_spec: SpecFactory
) -> None:
    spec = bridged_spec()
    address = bridged.start(spec, lambda line: None).address
    pid = bridged.client.api.inspect_container(container_name(spec.workspace_id))["State"]["Pid"]
    # As a server killed between the two steps of a plug leaves it: the host end there, the route not.
    subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", "route", "del", "default"], check=True)
    assert not bridge.routed(pid)

    log: list[str] = []
    observation = bridged.start(spec, log.append)

    assert f"Container {container_name(spec.workspace_id)} is already running" in log
    assert bridge.routed(pid)
    assert observation.address == address
    assert _exec(bridged, spec.workspace_id, "ls", "/sys/class/net").split() == ["eth0", "lo"]
