"""The isolation matrix for workspaces on the deployment bridge (runtimes/docker/bridge.py).

Egress-"all" workspaces of a deployment share one bridge whose ports the runtime plugs in itself. The fences
are the bridge's isolated ports (no frame between two workspaces), the engine's FORWARD rule for a bridge
without inter-container traffic (nothing routed back into it), Docker's isolation chains (nothing forwarded to
other networks' containers), the host firewall's REJECT for the bridge, and IPv6 turned off inside. Every
listener is first shown reachable from the host, so a failure is the fence, not a dead listener.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import docker
import pytest

from dockyard.runtimes.docker import DockerRuntime
from dockyard.runtimes.docker.naming import bridge_name, bridge_network_name, container_name
from tests.docker_fixtures import SESSION_PREFIX
from tests.security.conftest import (
    CONTAINER_PORT,
    HostListener,
    PlainContainer,
    chain_rules,
    host_addresses,
    isolation_plan,
    probe,
    start_listener,
)

pytestmark = [
    pytest.mark.docker,
    pytest.mark.timeout(300),
    pytest.mark.skipif(os.geteuid() != 0, reason="plugging veths into containers needs root"),
]

BLOCKED = {"timeout", "ENETUNREACH", "EHOSTUNREACH"}


@dataclass
class Shared:
    runtime: DockerRuntime
    make: Callable[[str], str]  # a workspace with this egress, started; its id


@pytest.fixture(scope="module")
def shared(engine: DockerRuntime, base_image: str, allowed_listener: HostListener) -> Iterator[Shared]:
    runtime = DockerRuntime(
        engine.base_url,
        subnet_pool="10.226.0.0/16",
        ready_timeout=30,
        deployment=f"test-secbr-{SESSION_PREFIX}",
        host_ports=(allowed_listener.port,),
        workspace_bridge="shared",
    )
    made: list[str] = []

    def make(egress: str) -> str:
        plan = isolation_plan(base_image, egress, kind="secbr")
        made.append(plan.workspace_id)
        runtime.start(plan, lambda line: None)
        return plan.workspace_id

    yield Shared(runtime, make)
    for workspace_id in made:
        runtime.delete(workspace_id, lambda line: None)
    # Unused now, the bridge is the deployment's only object left: pruned like an orphan, with its rules.
    for resource in runtime.managed_resources():
        runtime.remove_resource(resource)
    runtime.repair_host_isolation()
    runtime.close()


def _address(shared: Shared, workspace_id: str) -> str:
    address = shared.runtime.observe(workspace_id).address
    assert address
    return address


def test_no_workspace_on_the_bridge_reaches_another_the_host_or_a_neighbouring_container(
    shared: Shared,
    plain_container: PlainContainer,
    host_listener: HostListener,
    allowed_listener: HostListener,
    docker_client: docker.DockerClient,
) -> None:
    open_a, open_b, closed = shared.make("all"), shared.make("all"), shared.make("none")
    for workspace_id in (open_a, open_b, closed):
        start_listener(docker_client, workspace_id)
    targets = {"open_b": _address(shared, open_b), "plain": plain_container.address}
    for address in targets.values():
        # The control: reachable from the host, so a blocked probe below is the fence, not a dead listener.
        with socket.create_connection((address, CONTAINER_PORT), timeout=3) as connection:
            assert connection.getpeername()[0] == address
    network = docker_client.networks.get(bridge_network_name(str(shared.runtime.deployment)))
    gateway = str(next(ipaddress.ip_network(network.attrs["IPAM"]["Config"][0]["Subnet"]).hosts()))

    lateral = {
        target: probe(docker_client, open_a, address, CONTAINER_PORT) for target, address in targets.items()
    }
    from_closed = probe(docker_client, closed, targets["open_b"], CONTAINER_PORT)
    host = {
        target: probe(docker_client, open_a, address, host_listener.port)
        for target, address in (
            ("the bridge's gateway", gateway),
            *((f"host {a}", a) for a in host_addresses()),
        )
    }
    accepted = host_listener.accepted

    assert {target: outcome in BLOCKED for target, outcome in lateral.items()} == dict.fromkeys(
        lateral, True
    ), lateral
    assert from_closed == "ENETUNREACH"
    # Refused at once by the host firewall's REJECT for the bridge; what Dockyard serves stays open.
    assert host == dict.fromkeys(host, "ECONNREFUSED")
    assert host_listener.accepted == accepted
    assert probe(docker_client, open_a, gateway, allowed_listener.port) == "connected"
    assert any(
        f"-i {bridge_name(network.id)} " in rule and f"dockyard:{shared.runtime.deployment}:bridge" in rule
        for rule in chain_rules()
    )
    # A workspace still reaches its own listener, and has no IPv6 at all.
    assert probe(docker_client, open_a, _address(shared, open_a), CONTAINER_PORT) == "connected"
    container = docker_client.containers.get(container_name(open_a))
    code, output = container.exec_run(
        ["cat", "/proc/sys/net/ipv6/conf/all/disable_ipv6", "/proc/net/if_inet6"]
    )
    assert (code, output) == (0, b"1\n")
    assert shared.runtime.host_isolation().ok
