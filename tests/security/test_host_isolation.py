"""Workspaces cannot reach the host (issue 9.2), whatever their egress.

A listener on the host bound to 0.0.0.0 stands for any service on the host (a database, the Docker API over
TCP, a metrics endpoint). From workspaces with egress `all` and `none`, connections to the host's address on
their own bridge, on another workspace's bridge, and on its other interfaces (eth0, docker0) are refused by the
host firewall rules Dockyard installs for each workspace bridge; a plain container on an ordinary bridge network
reaches the same listener, so the refusal is Dockyard's doing. Deleting a workspace removes its rules.
"""

from __future__ import annotations

import shlex
import socket
import subprocess
import uuid

import docker
import pytest
import structlog

from dockyard.runtimes.base import HostIsolation
from dockyard.runtimes.docker import DockerRuntime
from dockyard.runtimes.docker.firewall import CHAIN
from dockyard.runtimes.docker.naming import network_name
from tests.docker_fixtures import SESSION_PREFIX
from tests.plans import workspace_plan
from tests.security.conftest import (
    PROBE,
    HostListener,
    PlainContainer,
    WorkspaceFactory,
    chain_rules,
    host_addresses,
    probe,
)

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]


def _bridge_rules(bridge: str) -> list[str]:
    return [rule for rule in chain_rules() if f"-i {bridge} " in rule]


def test_the_listener_is_reachable_without_dockyards_rules(
    host_listener: HostListener, plain_container: PlainContainer, docker_client: docker.DockerClient
) -> None:
    # The control: from the host itself, and from a container Dockyard did not make.
    for address in [*host_addresses(), "127.0.0.1"]:
        with socket.create_connection((address, host_listener.port), timeout=3):
            pass
    output = docker_client.containers.get(plain_container.name).exec_run(
        ["python3", "-c", PROBE, plain_container.gateway, str(host_listener.port)]
    )
    assert output.output.decode().strip() == "connected"


def test_workspaces_cannot_reach_the_host(
    new_workspace: WorkspaceFactory,
    host_listener: HostListener,
    docker_client: docker.DockerClient,
    isolation_runtime: DockerRuntime,
) -> None:
    open_ws, other_open, closed = new_workspace("all"), new_workspace("all"), new_workspace("none")
    others = host_addresses()
    port = host_listener.port
    accepted = host_listener.accepted

    seen = {
        target: probe(docker_client, open_ws.id, address, port)
        for target, address in (
            ("own gateway", open_ws.gateway),
            ("other workspace's gateway", other_open.gateway),
            *((f"host address {a}", a) for a in others),
        )
    }
    # Egress none has loopback only: not even a route to the host.
    unrouted = {
        target: probe(docker_client, closed.id, address, port)
        for target, address in (
            ("a workspace's gateway", open_ws.gateway),
            *((f"host address {a}", a) for a in others),
        )
    }

    # Refused, not timed out: the REJECT answers at once. Docker's isolation covers forwarding only, so the
    # host rules are what stop a workspace's connections to the host's own addresses.
    assert seen == dict.fromkeys(seen, "ECONNREFUSED")
    assert len(seen) == 2 + len(others)
    assert unrouted == dict.fromkeys(unrouted, "ENETUNREACH")
    assert host_listener.accepted == accepted
    # IPv6 is off inside workspaces, so the bridges' link-local addresses are no way around the rules.
    container = docker_client.containers.get(f"dockyard-ws-{open_ws.id}")
    code, output = container.exec_run(["cat", "/proc/sys/net/ipv6/conf/all/disable_ipv6"])
    assert (code, output) == (0, b"1\n")
    assert isolation_runtime.host_isolation().missing == ()


def test_deleting_a_workspace_removes_its_rules(
    new_workspace: WorkspaceFactory, isolation_runtime: DockerRuntime
) -> None:
    ws = new_workspace("all")
    assert [r.split(" -j ")[-1] for r in _bridge_rules(ws.bridge)][-1] == (
        "REJECT --reject-with icmp-port-unreachable"
    )
    assert f'--comment "dockyard:{isolation_runtime.deployment}:{ws.id}"' in _bridge_rules(ws.bridge)[-1]

    isolation_runtime.delete(ws.id, lambda line: None)

    assert _bridge_rules(ws.bridge) == []
    assert isolation_runtime.host_isolation().stale == ()


def test_ports_dockyard_serves_stay_reachable(
    new_workspace: WorkspaceFactory,
    host_listener: HostListener,
    allowed_listener: HostListener,
    docker_client: docker.DockerClient,
) -> None:
    ws = new_workspace("all")
    assert probe(docker_client, ws.id, ws.gateway, allowed_listener.port) == "connected"
    assert probe(docker_client, ws.id, ws.gateway, host_listener.port) == "ECONNREFUSED"


def test_doctor_finds_missing_rules_and_repair_puts_them_back(
    new_workspace: WorkspaceFactory,
    host_listener: HostListener,
    docker_client: docker.DockerClient,
    isolation_runtime: DockerRuntime,
) -> None:
    ws = new_workspace("all")
    [rule] = [r for r in _bridge_rules(ws.bridge) if "REJECT" in r]
    # As a firewall reload would: the rule goes, and the host is open to the workspace.
    subprocess.run(["iptables", "-w", "-D", CHAIN, *shlex.split(rule)[2:]], check=True)
    assert isolation_runtime.isolation is not None
    isolation_runtime.isolation.forget()  # this process would not know either
    assert probe(docker_client, ws.id, ws.gateway, host_listener.port) == "connected"

    report = isolation_runtime.host_isolation()
    assert (report.enforced, report.ok, report.missing) == (True, False, (network_name(ws.id),))

    repaired = isolation_runtime.repair_host_isolation()

    assert repaired.missing == (network_name(ws.id),)
    assert isolation_runtime.host_isolation().missing == ()
    assert probe(docker_client, ws.id, ws.gateway, host_listener.port) == "ECONNREFUSED"


def test_without_iptables_workspaces_start_and_every_report_says_they_are_open(
    engine: DockerRuntime,
    base_image: str,
    host_listener: HostListener,
    docker_client: docker.DockerClient,
) -> None:
    spec = workspace_plan(
        workspace_id=f"{SESSION_PREFIX}-nofw-{uuid.uuid4().hex[:8]}",
        name="nofw",
        owner="alice",
        owner_id="user-1",
        template="sec",
        build_id="build-1",
        image=base_image,
        memory_bytes=256 * 2**20,
    )
    log: list[str] = []
    with structlog.testing.capture_logs() as logged:
        # Loud at once, when the server binds its runtime at start.
        runtime = DockerRuntime(
            engine.base_url,
            subnet_pool="10.222.0.0/16",
            deployment=f"test-nofw-{uuid.uuid4().hex[:8]}",
            iptables="/nonexistent/iptables",
        )
    try:
        with structlog.testing.capture_logs() as later:
            runtime.start(spec, log.append)
            report = runtime.host_isolation()
        gateway = docker_client.containers.get(f"dockyard-ws-{spec.workspace_id}").attrs["NetworkSettings"][
            "Networks"
        ][network_name(spec.workspace_id)]["Gateway"]
        reachable = probe(docker_client, spec.workspace_id, gateway, host_listener.port)
    finally:
        runtime.delete(spec.workspace_id, lambda line: None)
        runtime.close()

    message = "/nonexistent/iptables is not installed, so workspaces can reach services on this host."
    assert f"WARNING: {message}" in log
    assert report == HostIsolation(False, message, missing=(network_name(spec.workspace_id),))
    assert [(e["log_level"], e["event"]) for e in logged if e["log_level"] == "error"] == [
        ("error", "host firewall unavailable: workspaces can reach services listening on this host")
    ]
    assert [e["event"] for e in later if e["log_level"] == "error"] == []  # once, not per network
    # The truth the warnings tell.
    assert reachable == "connected"
