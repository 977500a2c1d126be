"""The deployment bridge: egress-"all" workspaces share one bridge and get their interface from the runtime.

Docker's own way, a user-defined network per workspace that the engine joins the container to, costs every
start the engine's network sandbox (libnetwork's prestart hook, a re-exec of dockerd), an embedded DNS
resolver, and a network create that the engine makes one at a time under one lock. Measured on the engine alone,
50 containers started at once and answering `exec true`: 7.0-7.4 s on Docker's default bridge, about 10 s on
networks of their own, 3.7-4.3 s with the network disabled and a veth plugged in afterwards. The last is what a
CNI bridge plugin does for Kubernetes, and what this module does: the container is made with its network
disabled (a namespace with loopback only), and after its start a veth pair is added whose inner end becomes
the container's `eth0`, with an address, a default route and a MAC of its own.

Isolation, in three layers:
- the bridge is a Docker network of the deployment made with inter-container traffic off (`enable_icc=false`),
  so the engine keeps its NAT and FORWARD rules for it and drops traffic routed from one port to another;
- each port is `isolated`: the kernel forwards no frame between two isolated ports, so workspaces cannot even
  resolve each other's MAC;
- the host firewall's INPUT rules (`isolation.py`) refuse the bridge's connections to the host, as for any
  workspace bridge.

Addresses need no store: the host end of each pair is named after its address's index (`dy<deployment><index>`),
so the kernel's rule that interface names are unique is the allocation. Two starts, or two replicas on this
host, never take one address, and the pair (and so the address) goes away with the container's network
namespace. The MAC is derived from the address, as Docker does, so an address used again never meets a stale
neighbour entry. The interface's alias holds the workspace id: how a restarted server finds the address of a
workspace that kept running.

This needs root on the engine's host: the engine's network namespace and process ids, with `ip` and `nsenter`.
Where that is missing (a remote engine, a server without root) the runtime gives each workspace a network of
its own as before (`DockerRuntime(workspace_bridge="auto")`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dockyard.runtimes.base import RuntimeFailure

# Where egress-"all" workspaces go: "shared" (this bridge), "own" (a Docker network each), or "auto" (shared
# where this process can plug veths into the engine's containers, else own).
MODES = ("auto", "shared", "own")
# What the bridge network is to the deployment's other objects: `managed_resources` never lists it as an
# orphan, since it belongs to no workspace.
ROLE = "workspace-bridge"
# Docker's option for the FORWARD rule that drops traffic between the bridge's own ports.
OPTIONS = {"com.docker.network.bridge.enable_icc": "false"}
# The container's end of the pair, once it is inside.
INSIDE = "eth0"
# The setup step waits this long for its interface (the runtime plugs it in right after the start).
WAIT_SECONDS = 60
_SYS_NET = Path("/sys/class/net")
_TIMEOUT = 30.0

Runner = Callable[[Sequence[str], str], "subprocess.CompletedProcess[str]"]


def _run(argv: Sequence[str], stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), input=stdin, capture_output=True, text=True, timeout=_TIMEOUT, check=False
    )


@dataclass(frozen=True)
class Bridge:
    """The deployment's bridge network as the kernel sees it."""

    network_id: str
    device: str
    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address

    @property
    def capacity(self) -> int:
        """How many workspace addresses the subnet holds (not its network, broadcast or gateway address)."""
        return self.subnet.num_addresses - 3

    def address(self, index: int) -> ipaddress.IPv4Address:
        """The index-th workspace address, skipping the gateway."""
        first = int(self.subnet.network_address) + 1
        candidate = first + index
        if candidate >= int(self.gateway):
            candidate += 1
        return ipaddress.IPv4Address(candidate)


def unusable_reason(engine_url: str) -> str | None:
    """Why this process cannot plug veths into the engine's containers, or None when it can."""
    if not engine_url.startswith(("unix://", "/")):
        return f"the engine at {engine_url} is not on this host"
    if os.geteuid() != 0:
        return "this process is not root"
    missing = [program for program in ("ip", "nsenter") if shutil.which(program) is None]
    if missing:
        return f"{' and '.join(missing)} not installed"
    return None


def mac_of(address: ipaddress.IPv4Address) -> str:
    """A locally administered MAC that carries the address, as Docker makes them (02:42:a.b.c.d)."""
    return "02:42:" + ":".join(f"{byte:02x}" for byte in address.packed)


class DeploymentBridge:
    """Plugs workspace containers into the deployment's bridge and tells their addresses."""

    def __init__(self, deployment: str, *, runner: Runner = _run, sys_net: Path = _SYS_NET) -> None:
        # Six hex digits of the deployment and five of the index: 13 characters, within the kernel's 15.
        self.prefix = "dy" + hashlib.sha256(deployment.encode()).hexdigest()[:6]
        self._runner = runner
        self._sys_net = sys_net
        self._lock = threading.Lock()
        self._addresses: dict[str, tuple[str, str]] = {}  # workspace id -> (interface, address)

    def interface(self, index: int) -> str:
        return f"{self.prefix}{index:05x}"

    def _index(self, interface: str) -> int | None:
        tail = interface.removeprefix(self.prefix)
        if tail == interface or len(tail) != 5:
            return None
        try:
            return int(tail, 16)
        except ValueError:
            return None

    def _taken(self) -> set[str]:
        try:
            return {name for name in os.listdir(self._sys_net) if name.startswith(self.prefix)}
        except OSError:
            return set()

    def attach(self, bridge: Bridge, workspace_id: str, container_id: str, pid: int) -> str:
        """Give the running container `eth0` on the bridge; returns its address."""
        _check_process(container_id, pid)
        start = int(hashlib.sha256(workspace_id.encode()).hexdigest(), 16) % bridge.capacity
        taken = self._taken()
        for step in range(bridge.capacity):
            index = (start + step) % bridge.capacity
            interface = self.interface(index)
            if interface in taken:
                continue
            address = bridge.address(index)
            if self._plug(bridge, interface, address, workspace_id, pid):
                with self._lock:
                    self._addresses[workspace_id] = (interface, str(address))
                return str(address)
        raise RuntimeFailure(
            f"All {bridge.capacity} addresses of the workspace bridge ({bridge.subnet}) are in use.",
            detail="Give the runtime a larger workspace subnet pool, or stop some workspaces.",
        )

    def _plug(
        self, bridge: Bridge, interface: str, address: ipaddress.IPv4Address, workspace_id: str, pid: int
    ) -> bool:
        """Add the pair and configure both ends; False when another start holds this interface name."""
        peer = interface + "p"
        outside = (
            f"link add {interface} type veth peer name {peer} address {mac_of(address)}\n"
            f"link set {interface} alias {workspace_id}\n"
            f"link set {interface} master {bridge.device}\n"
            f"link set {interface} type bridge_slave isolated on\n"
            f"link set {interface} up\n"
            f"link set {peer} netns {pid}\n"
        )
        result = self._runner(["ip", "-batch", "-"], outside)
        if result.returncode != 0:
            if "File exists" in result.stderr and "-:1" in result.stderr:
                return False
            self._unplug(interface)
            raise _failure("Plugging the workspace into its bridge", result)
        inside = (
            f"link set {peer} name {INSIDE}\n"
            f"addr add {address}/{bridge.subnet.prefixlen} dev {INSIDE}\n"
            f"link set {INSIDE} up\n"
            f"route add default via {bridge.gateway}\n"
        )
        result = self._runner(["nsenter", "-t", str(pid), "-n", "ip", "-batch", "-"], inside)
        if result.returncode != 0:
            self._unplug(interface)
            raise _failure("Configuring the workspace's network interface", result)
        return True

    def release(self, workspace_id: str) -> None:
        """Remove what a plug of this workspace left (a server killed between its two steps leaves a host end
        with the workspace's alias and a container without its address)."""
        for interface in sorted(self._taken()):
            if self._alias(interface) == workspace_id:
                self._unplug(interface)
        with self._lock:
            self._addresses.pop(workspace_id, None)

    def _unplug(self, interface: str) -> None:
        # Deleting one end deletes the pair, wherever its other end is.
        self._runner(["ip", "link", "del", interface], "")

    def address_of(self, workspace_id: str, bridge: Bridge | None) -> str | None:
        """The address of the workspace's interface, checked against the kernel (the alias names the
        workspace), or None when it has none."""
        with self._lock:
            known = self._addresses.get(workspace_id)
        if known is not None and self._alias(known[0]) == workspace_id:
            return known[1]
        if bridge is None:
            return None
        # One pass learns every workspace's port: a restarted server asks for each running workspace in turn.
        found: dict[str, tuple[str, str]] = {}
        for interface in sorted(self._taken()):
            index = self._index(interface)
            alias = self._alias(interface) if index is not None else None
            if index is not None and alias:
                found[alias] = (interface, str(bridge.address(index)))
        with self._lock:
            self._addresses = found
        return found[workspace_id][1] if workspace_id in found else None

    def _alias(self, interface: str) -> str | None:
        try:
            return (self._sys_net / interface / "ifalias").read_text().strip() or None
        except OSError:
            return None


def routed(pid: int) -> bool:
    """Whether the process's network namespace has its default route through `eth0`: the last step of a plug."""
    try:
        lines = Path(f"/proc/{pid}/net/route").read_text().splitlines()
    except OSError:
        return False
    return any(line.split()[:2] == [INSIDE, "00000000"] for line in lines[1:])


def _check_process(container_id: str, pid: int) -> None:
    """Refuse to configure a process that is not the container's: a server in a process namespace other than
    the engine's would read the container's id for a process of its own."""
    try:
        cgroups = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError as exc:
        raise RuntimeFailure(
            f"Process {pid} of the workspace container is not visible to the server.",
            detail="The server must share the engine's process namespace to plug in its network.",
        ) from exc
    if container_id not in cgroups:
        raise RuntimeFailure(
            f"Process {pid} is not the workspace container's in this server's process namespace.",
            detail="Run the server in the engine's process namespace, or with --workspace-bridge own.",
        )


def _failure(what: str, result: subprocess.CompletedProcess[str]) -> RuntimeFailure:
    return RuntimeFailure(f"{what} failed: {(result.stderr or result.stdout).strip()}")


def nameservers(resolv_conf: Path = Path("/etc/resolv.conf")) -> tuple[str, ...]:
    """The resolvers Docker gives a container on its default bridge: the host's, without loopback ones (which
    would be the container's own), or Google's public ones when nothing else is left."""
    found = []
    try:
        lines = resolv_conf.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                address = ipaddress.ip_address(words[1].split("%")[0])
            except ValueError:
                continue
            if not address.is_loopback and address.version == 4:
                found.append(str(address))
    return tuple(found) or ("8.8.8.8", "8.8.4.4")
