"""The deployment bridge's address choice, plugging and resolvers, with `ip` faked (the real thing runs in
test_docker_bridge.py and tests/security/test_shared_bridge.py)."""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from dockyard.runtimes.base import RuntimeFailure
from dockyard.runtimes.docker import bridge

SUBNET = ipaddress.IPv4Network("10.9.4.0/30")  # one workspace address besides the gateway
BRIDGE = bridge.Bridge(
    "n" * 64, "br-nnnnnnnnnnnn", ipaddress.IPv4Network("10.9.0.0/22"), ipaddress.IPv4Address("10.9.0.1")
)


class FakeIp:
    """Answers `ip -batch` and `nsenter … ip -batch` with scripted results; records each call's input."""

    def __init__(self, answers: list[tuple[int, str]]) -> None:
        self.answers = answers
        self.calls: list[tuple[list[str], str]] = []

    def __call__(self, argv: Sequence[str], stdin: str) -> subprocess.CompletedProcess[str]:
        self.calls.append((list(argv), stdin))
        code, stderr = self.answers.pop(0) if self.answers else (0, "")
        return subprocess.CompletedProcess(list(argv), code, "", stderr)


@pytest.fixture
def proc_of(monkeypatch: pytest.MonkeyPatch) -> None:
    # The container's process, as the kernel shows it: its cgroup names the container.
    monkeypatch.setattr(bridge, "_check_process", lambda container_id, pid: None)


def test_addresses_skip_the_network_and_the_gateway() -> None:
    assert [str(BRIDGE.address(i)) for i in (0, 1, 2)] == ["10.9.0.2", "10.9.0.3", "10.9.0.4"]
    assert BRIDGE.capacity == 1021
    middle = bridge.Bridge(
        "n", "br-n", ipaddress.IPv4Network("10.9.0.0/29"), ipaddress.IPv4Address("10.9.0.3")
    )
    assert [str(middle.address(i)) for i in range(5)] == [
        "10.9.0.1",
        "10.9.0.2",
        "10.9.0.4",
        "10.9.0.5",
        "10.9.0.6",
    ]
    assert bridge.mac_of(ipaddress.IPv4Address("10.219.30.8")) == "02:42:0a:db:1e:08"


def test_a_plug_configures_both_ends_and_names_the_host_end_for_its_address(
    tmp_path: Path, proc_of: None
) -> None:
    ip = FakeIp([])
    plugs = bridge.DeploymentBridge("deployment-1", runner=ip, sys_net=tmp_path)

    address = plugs.attach(BRIDGE, "ws-1", "c" * 64, 4242)

    (outside_argv, outside), (inside_argv, inside) = ip.calls
    index = int(ipaddress.IPv4Address(address)) - int(ipaddress.IPv4Address("10.9.0.2"))
    interface = plugs.interface(index)
    assert len(interface) <= 15
    assert outside_argv == ["ip", "-batch", "-"]
    assert outside.splitlines() == [
        f"link add {interface} type veth peer name {interface}p address {bridge.mac_of(ipaddress.IPv4Address(address))}",
        f"link set {interface} alias ws-1",
        f"link set {interface} master br-nnnnnnnnnnnn",
        f"link set {interface} type bridge_slave isolated on",
        f"link set {interface} up",
        f"link set {interface}p netns 4242",
    ]
    assert inside_argv == ["nsenter", "-t", "4242", "-n", "ip", "-batch", "-"]
    assert inside.splitlines() == [
        f"link set {interface}p name eth0",
        f"addr add {address}/22 dev eth0",
        "link set eth0 up",
        "route add default via 10.9.0.1",
    ]


def test_a_name_another_start_holds_moves_the_search_on_and_a_taken_one_is_never_tried(
    tmp_path: Path, proc_of: None
) -> None:
    first = bridge.DeploymentBridge("deployment-1", runner=FakeIp([]), sys_net=tmp_path)
    start = first.attach(BRIDGE, "ws-1", "c", 1)
    (tmp_path / first.interface(int(ipaddress.IPv4Address(start)) - int(BRIDGE.address(0)))).mkdir()
    # The next index is taken by a start in another process between the listing and the add.
    ip = FakeIp([(2, "RTNETLINK answers: File exists\nCommand failed -:1\n"), (0, ""), (0, "")])
    plugs = bridge.DeploymentBridge("deployment-1", runner=ip, sys_net=tmp_path)

    address = plugs.attach(BRIDGE, "ws-1", "c", 1)

    assert [argv[0] for argv, _ in ip.calls] == ["ip", "ip", "nsenter"]
    assert int(ipaddress.IPv4Address(address)) == int(ipaddress.IPv4Address(start)) + 2


def test_a_failure_after_the_add_removes_the_pair_and_says_what_ip_said(
    tmp_path: Path, proc_of: None
) -> None:
    ip = FakeIp([(0, ""), (2, "RTNETLINK answers: File exists\nCommand failed -:1\n"), (0, "")])
    plugs = bridge.DeploymentBridge("deployment-1", runner=ip, sys_net=tmp_path)

    # Inside, "File exists" is the container's eth0 (plugged in already), not a taken name: no retry.
    with pytest.raises(
        RuntimeFailure, match="Configuring the workspace's network interface failed: RTNETLINK"
    ):
        plugs.attach(BRIDGE, "ws-1", "c", 1)

    assert ip.calls[-1][0][:3] == ["ip", "link", "del"]
    assert len(ip.calls) == 3


def test_a_full_bridge_is_refused_with_its_size(tmp_path: Path, proc_of: None) -> None:
    tiny = bridge.Bridge("n", "br-n", SUBNET, ipaddress.IPv4Address("10.9.4.1"))
    plugs = bridge.DeploymentBridge("deployment-1", runner=FakeIp([]), sys_net=tmp_path)
    (tmp_path / plugs.interface(0)).mkdir()

    with pytest.raises(
        RuntimeFailure, match=r"All 1 addresses of the workspace bridge \(10.9.4.0/30\) are in use"
    ):
        plugs.attach(tiny, "ws-2", "c", 1)


def test_the_address_of_a_workspace_is_read_back_from_the_interface_alias(tmp_path: Path) -> None:
    plugs = bridge.DeploymentBridge("deployment-1", runner=FakeIp([]), sys_net=tmp_path)
    interface = tmp_path / plugs.interface(7)
    interface.mkdir()
    (interface / "ifalias").write_text("ws-7\n")
    (tmp_path / "eth0").mkdir()

    other = tmp_path / plugs.interface(3)
    other.mkdir()
    (other / "ifalias").write_text("ws-3\n")

    assert plugs.address_of("ws-7", BRIDGE) == "10.9.0.9"
    # Learnt in the same pass: known without the bridge's listing.
    assert plugs.address_of("ws-3", None) == "10.9.0.5"
    assert plugs.address_of("ws-8", BRIDGE) is None
    # A name used again by another workspace is noticed: the alias is checked, not the remembered answer.
    (interface / "ifalias").write_text("ws-9\n")
    assert plugs.address_of("ws-7", BRIDGE) is None


def test_a_process_that_is_not_the_containers_is_refused() -> None:
    with pytest.raises(RuntimeFailure, match="is not the workspace container's"):
        bridge._check_process("c" * 64, 1)


def test_resolvers_are_the_hosts_without_loopback_or_googles_when_none_is_left(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text(
        "# generated\nnameserver 127.0.0.53\nnameserver 10.255.255.53\nnameserver fe80::1%eth0\nsearch x\n"
    )
    assert bridge.nameservers(conf) == ("10.255.255.53",)
    conf.write_text("nameserver 127.0.0.53\n")
    assert bridge.nameservers(conf) == ("8.8.8.8", "8.8.4.4")
    assert bridge.nameservers(tmp_path / "missing") == ("8.8.8.8", "8.8.4.4")
