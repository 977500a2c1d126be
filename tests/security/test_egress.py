"""Egress `none` means none, and no workspace reaches another (issue 9.3).

Every workspace has a bridge network of its own; an egress-`none` one is an internal network. Docker's isolation
chains drop forwarding between bridge networks, and between an internal network and anything off its subnet;
these tests check that they do, against listeners in other workspaces and in a plain container on an ordinary
bridge network (each listener first shown reachable from the host, so a failure is the fence, not a dead
listener). The host's own addresses are covered by test_host_isolation.py.
"""

from __future__ import annotations

import socket
import subprocess

import docker
import pytest

from dockyard.runtimes.docker.naming import network_name
from tests.security.conftest import (
    CONTAINER_PORT,
    PlainContainer,
    WorkspaceFactory,
    probe,
    start_listener,
)

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

# Dropped in forwarding, so the connect times out; ENETUNREACH/EHOSTUNREACH would be as good.
BLOCKED = {"timeout", "ENETUNREACH", "EHOSTUNREACH"}


def _reachable_from_host(address: str) -> bool:
    try:
        with socket.create_connection((address, CONTAINER_PORT), timeout=3):
            return True
    except OSError:
        return False


def test_no_workspace_reaches_another_or_a_neighbouring_container(
    new_workspace: WorkspaceFactory, plain_container: PlainContainer, docker_client: docker.DockerClient
) -> None:
    closed_a, closed_b = new_workspace("none"), new_workspace("none")
    open_a, open_b = new_workspace("all"), new_workspace("all")
    for ws in (closed_a, closed_b, open_a, open_b):
        start_listener(docker_client, ws.id)
    targets = {
        "closed_b": closed_b.address,
        "open_a": open_a.address,
        "open_b": open_b.address,
        "closed_a": closed_a.address,
        "plain": plain_container.address,
    }
    assert {name: _reachable_from_host(address) for name, address in targets.items()} == dict.fromkeys(
        targets, True
    )

    seen = {
        (source, target): probe(docker_client, ws.id, targets[target], CONTAINER_PORT)
        for source, ws, reached in (
            ("closed_a", closed_a, ("closed_b", "open_a", "plain")),
            ("open_a", open_a, ("open_b", "closed_a", "plain")),
        )
        for target in reached
    }

    assert {key: outcome in BLOCKED for key, outcome in seen.items()} == dict.fromkeys(seen, True), seen
    # Docker's rule that keeps an internal network's traffic on its subnet (it has a default route to its
    # gateway all the same): egress none relies on it, and on the host rules for the host's own addresses.
    network = docker_client.networks.get(network_name(closed_a.id))
    subnet = network.attrs["IPAM"]["Config"][0]["Subnet"]
    isolation = subprocess.run(
        ["iptables", "-w", "-S", "DOCKER-ISOLATION-STAGE-1"], capture_output=True, text=True, check=True
    )
    assert f"-A DOCKER-ISOLATION-STAGE-1 ! -d {subnet} -i {closed_a.bridge} -j DROP" in isolation.stdout
    # A workspace still reaches its own listener on its own address.
    assert probe(docker_client, open_a.id, open_a.address, CONTAINER_PORT) == "connected"
    assert probe(docker_client, closed_a.id, closed_a.address, CONTAINER_PORT) == "connected"
