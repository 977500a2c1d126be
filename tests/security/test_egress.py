"""Egress `none` means none, and no workspace reaches another (issue 9.3).

An egress-`none` workspace has loopback only (no network, no route); every other workspace has a bridge network
of its own, and Docker's isolation chains drop forwarding between bridge networks. These tests check both,
against listeners in other workspaces and in a plain container on an ordinary bridge network (each listener
first shown reachable from the host, so a failure is the fence, not a dead listener). The host's own addresses
are covered by test_host_isolation.py.
"""

from __future__ import annotations

import socket

import docker
import pytest

from dockyard.runtimes.docker.naming import container_name
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
    closed = new_workspace("none")
    open_a, open_b = new_workspace("all"), new_workspace("all")
    for ws in (closed, open_a, open_b):
        start_listener(docker_client, ws.id)
    targets = {"open_a": open_a.address, "open_b": open_b.address, "plain": plain_container.address}
    assert {name: _reachable_from_host(address) for name, address in targets.items()} == dict.fromkeys(
        targets, True
    )

    seen = {
        (source, target): probe(docker_client, ws.id, targets[target], CONTAINER_PORT)
        for source, ws, reached in (
            ("closed", closed, ("open_a", "open_b", "plain")),
            ("open_a", open_a, ("open_b", "plain")),
        )
        for target in reached
    }

    assert {key: outcome in BLOCKED for key, outcome in seen.items()} == dict.fromkeys(seen, True), seen
    # Egress none: loopback is its only interface, and there is no route anywhere.
    container = docker_client.containers.get(container_name(closed.id))
    code, output = container.exec_run(["sh", "-c", "ls /sys/class/net; cat /proc/net/route"])
    assert code == 0, output
    assert bytes(output).decode().split()[:2] == ["lo", "Iface"]
    assert len(bytes(output).decode().strip().splitlines()) == 2  # the route table's header alone
    # A workspace still reaches its own listener.
    assert probe(docker_client, open_a.id, open_a.address, CONTAINER_PORT) == "connected"
    assert probe(docker_client, closed.id, "127.0.0.1", CONTAINER_PORT) == "connected"
