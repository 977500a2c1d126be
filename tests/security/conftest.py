"""Fixtures of the isolation matrix: workspaces on the real Docker engine, probes run inside them, and listeners
on the host and in plain containers for them to (fail to) reach. All traffic stays on this machine."""

from __future__ import annotations

import socket
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import docker
import pytest

from dockyard.runtimes.docker import DockerRuntime
from dockyard.runtimes.docker.firewall import CHAIN
from dockyard.runtimes.docker.naming import bridge_name, container_name, network_name
from dockyard.runtimes.plan import WorkspacePlan
from tests.docker_fixtures import SESSION_PREFIX
from tests.plans import workspace_plan

# Connects to HOST:PORT from inside a workspace and prints what happened: "connected" or the errno's name.
PROBE = """
import errno, socket, sys
s = socket.socket()
s.settimeout(3)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("connected")
except socket.timeout:
    print("timeout")
except OSError as exc:
    print(errno.errorcode.get(exc.errno, str(exc)))
"""

# A TCP listener that accepts and closes, for the workspaces' and plain containers' side.
LISTEN = "import socket; s = socket.socket(); s.bind(('0.0.0.0', {port})); s.listen(64)\nwhile True: s.accept()[0].close()"
CONTAINER_PORT = 8080


@dataclass
class Workspace:
    spec: WorkspacePlan
    address: str  # the container's ("" for egress none: loopback only)
    gateway: str  # its bridge's address on the host
    bridge: str

    @property
    def id(self) -> str:
        return self.spec.workspace_id


def probe(client: docker.DockerClient, workspace_id: str, host: str, port: int) -> str:
    container = client.containers.get(container_name(workspace_id))
    code, output = container.exec_run(["python3", "-c", PROBE, host, str(port)], user="dev")
    assert code == 0, output
    return output.decode().strip()


def host_addresses() -> list[str]:
    """The host's own IPv4 addresses on its other interfaces (eth0, docker0, …).

    Not loopback (a container's 127.0.0.1 is its own), and not other networks' bridges (`br-…`): other test
    runs on the shared engine make and remove those all the time; the tests name their own bridges.
    """
    lines = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True)
    found = [(line.split()[1], line.split()[3].split("/")[0]) for line in lines.stdout.splitlines()]
    return [address for name, address in found if name != "lo" and not name.startswith("br-")]


def chain_rules() -> list[str]:
    result = subprocess.run(["iptables", "-w", "-S", CHAIN], capture_output=True, text=True, check=False)
    return result.stdout.splitlines()


@pytest.fixture(scope="module")
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    yield client
    client.close()


class HostListener:
    """Accepts and closes TCP connections on 0.0.0.0:port on the host, counting them."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("0.0.0.0", 0))  # every address, as the services this test guards against listen
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def host_listener() -> Iterator[HostListener]:
    listener = HostListener()
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def allowed_listener() -> Iterator[HostListener]:
    """A second host listener on a port the runtime lets workspaces reach (as the agent endpoint would be)."""
    listener = HostListener()
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def isolation_runtime(
    engine: DockerRuntime, base_image: str, allowed_listener: HostListener
) -> Iterator[DockerRuntime]:
    runtime = DockerRuntime(
        engine.base_url,
        subnet_pool="10.222.0.0/16",
        ready_timeout=30,
        deployment=f"test-sec-{SESSION_PREFIX}",
        host_ports=(allowed_listener.port,),
    )
    yield runtime
    for resource in runtime.managed_resources():
        runtime.remove_resource(resource)
    runtime.repair_host_isolation()
    runtime.close()


WorkspaceFactory = Callable[..., Workspace]


def isolation_plan(image: str, egress: str, *, kind: str = "sec", **overrides: Any) -> WorkspacePlan:
    """A small workspace with this egress and a fresh id (`kind` goes into the id and the name)."""
    workspace_id = f"{SESSION_PREFIX}-{kind}-{uuid.uuid4().hex[:8]}"
    return workspace_plan(
        workspace_id=workspace_id,
        name=f"{kind}-{egress}",
        owner="alice",
        owner_id="user-1",
        template="sec",
        build_id="build-1",
        image=image,
        cpu=0.5,
        memory_bytes=256 * 2**20,
        pids=128,
        egress=egress,
        **overrides,
    )


@pytest.fixture(scope="module")
def new_workspace(
    isolation_runtime: DockerRuntime, base_image: str, docker_client: docker.DockerClient
) -> Iterator[WorkspaceFactory]:
    made: list[str] = []

    def make(egress: str, **overrides: Any) -> Workspace:
        spec = isolation_plan(base_image, egress, **overrides)
        made.append(spec.workspace_id)
        observation = isolation_runtime.start(spec, lambda line: None)
        if egress == "none":
            # Loopback only: no address, no gateway, no bridge.
            assert observation.address is None
            return Workspace(spec, "", "", "")
        assert observation.address
        network = docker_client.networks.get(network_name(spec.workspace_id))
        attached = docker_client.containers.get(container_name(spec.workspace_id)).attrs["NetworkSettings"]
        gateway = attached["Networks"][network.name]["Gateway"]
        return Workspace(spec, observation.address, gateway, bridge_name(network.id))

    yield make
    for workspace_id in made:
        isolation_runtime.delete(workspace_id, lambda line: None)


def start_listener(client: docker.DockerClient, workspace_id: str) -> None:
    """A listener on CONTAINER_PORT inside the workspace, reachable from inside it."""
    container = client.containers.get(container_name(workspace_id))
    container.exec_run(["python3", "-c", LISTEN.format(port=CONTAINER_PORT)], user="dev", detach=True)
    for _ in range(50):
        if probe(client, workspace_id, "127.0.0.1", CONTAINER_PORT) == "connected":
            return
    raise AssertionError(f"the listener in {workspace_id} did not start")


@dataclass
class PlainContainer:
    """A container on an ordinary bridge network, not Dockyard's: a neighbour workspaces must not reach."""

    address: str
    gateway: str
    name: str


@pytest.fixture(scope="module")
def plain_container(docker_client: docker.DockerClient, base_image: str) -> Iterator[PlainContainer]:
    name = f"dockyard-test-plain-{SESSION_PREFIX}"
    labels = {"dockyard.test": SESSION_PREFIX}
    network = docker_client.networks.create(
        name,
        driver="bridge",
        labels=labels,
        ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet="10.223.0.0/28")]),
    )
    container = docker_client.containers.run(
        base_image,
        ["python3", "-c", LISTEN.format(port=CONTAINER_PORT)],
        name=name,
        labels=labels,
        network=name,
        detach=True,
    )
    try:
        container.reload()
        address = container.attrs["NetworkSettings"]["Networks"][name]["IPAddress"]
        gateway = container.attrs["NetworkSettings"]["Networks"][name]["Gateway"]
        yield PlainContainer(address, gateway, name)
    finally:
        container.remove(force=True)
        network.remove()
