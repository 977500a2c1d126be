"""The host firewall's iptables calls, with iptables faked at the process boundary (the real rules are tested
through the engine in tests/security/test_host_isolation.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

import pytest

from dockyard.runtimes.base import RuntimeFailure
from dockyard.runtimes.docker.firewall import CHAIN, FirewallUnavailable, HostFirewall
from dockyard.runtimes.docker.isolation import BridgeIsolation

REJECT = ["-j", "REJECT", "--reject-with", "icmp-port-unreachable"]


class FakeIptables:
    """Keeps rules per chain the way iptables does, and records every call."""

    def __init__(self) -> None:
        # Chains of other tables than filter are keyed "table/chain".
        self.chains: dict[str, list[list[str]]] = {
            "INPUT": [["-j", "ACCEPT"]],
            "DOCKER-USER": [],
            "nat/PREROUTING": [],
            "nat/POSTROUTING": [],
        }
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        self.calls.append(argv)
        assert argv[:2] == ["iptables", "-w"]
        table = "filter"
        if argv[2] == "-t":
            table, argv = argv[3], argv[:2] + argv[4:]
        op, chain, rest = argv[2], argv[3], argv[4:]
        name = chain
        chain = chain if table == "filter" else f"{table}/{chain}"

        def done(code: int = 0, out: str = "", err: str = "") -> subprocess.CompletedProcess[str]:
            return subprocess.CompletedProcess(argv, code, out, err)

        if op == "-N":
            if chain in self.chains:
                return done(1, err="iptables: Chain already exists.")
            self.chains[chain] = []
            return done()
        if chain not in self.chains:
            return done(1, err="iptables: Bad rule (does a matching rule exist in that chain?).")
        rules = self.chains[chain]
        if op == "-C":
            if rest[-2:] == ["-j", CHAIN] and CHAIN not in self.chains:
                return done(2, err=f"iptables v1.8.9 (nf_tables): Chain '{CHAIN}' does not exist")
            return done(0 if rest in rules else 1)
        if op == "-A":
            rules.append(rest)
        elif op == "-I":
            rules.insert(int(rest[0]) - 1, rest[1:])
        elif op == "-D":
            if rest not in rules:
                return done(1)
            rules.remove(rest)
        elif op == "-S":
            lines = [f"-N {name}"] + [
                f"-A {name} " + " ".join(f'"{w}"' if ":" in w else w for w in rule) for rule in rules
            ]
            return done(out="\n".join(lines) + "\n")
        return done()


def test_isolate_installs_the_chain_once_and_one_rule_per_bridge() -> None:
    iptables = FakeIptables()
    firewall = HostFirewall("dep1", runner=iptables)

    assert firewall.isolate("br-aaa", "ws-a") is True
    assert firewall.isolate("br-aaa", "ws-a") is False
    assert firewall.isolate("br-bbb", "ws-b") is True

    assert iptables.chains["INPUT"][0] == ["-j", CHAIN]
    assert iptables.chains[CHAIN] == [
        ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "RETURN"],
        ["-i", "br-aaa", "-m", "comment", "--comment", "dockyard:dep1:ws-a", *REJECT],
        ["-i", "br-bbb", "-m", "comment", "--comment", "dockyard:dep1:ws-b", *REJECT],
    ]
    assert firewall.isolated_bridges() == {"br-aaa": "ws-a", "br-bbb": "ws-b"}


def test_allowed_ports_come_before_the_refusal() -> None:
    iptables = FakeIptables()
    firewall = HostFirewall("dep1", allowed_ports=(3000,), runner=iptables)
    firewall.isolate("br-aaa", "ws-a")

    assert iptables.chains[CHAIN][1:] == [
        ["-i", "br-aaa", "-p", "tcp", "-m", "tcp", "--dport", "3000", "-m", "comment", "--comment",
         "dockyard:dep1:ws-a", "-j", "RETURN"],
        ["-i", "br-aaa", "-m", "comment", "--comment", "dockyard:dep1:ws-a", *REJECT],
    ]  # fmt: skip
    assert firewall.release("br-aaa") == 2
    assert iptables.chains[CHAIN] == [["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "RETURN"]]


def test_a_deployment_sees_and_removes_only_its_own_rules() -> None:
    iptables = FakeIptables()
    mine, theirs = HostFirewall("dep1", runner=iptables), HostFirewall("dep2", runner=iptables)
    mine.isolate("br-aaa", "ws-a")
    theirs.isolate("br-bbb", "ws-b")

    assert mine.isolated_bridges() == {"br-aaa": "ws-a"}
    assert mine.release("br-bbb") == 0
    assert theirs.isolated_bridges() == {"br-bbb": "ws-b"}


def test_a_flushed_chain_is_made_again() -> None:
    iptables = FakeIptables()
    firewall = HostFirewall("dep1", runner=iptables)
    firewall.isolate("br-aaa", "ws-a")
    del iptables.chains[CHAIN]  # a firewall reload
    iptables.chains["INPUT"] = [["-j", "ACCEPT"]]

    assert firewall.isolate("br-bbb", "ws-b") is True

    assert iptables.chains["INPUT"][0] == ["-j", CHAIN]
    assert firewall.isolated_bridges() == {"br-bbb": "ws-b"}


def test_without_iptables_the_firewall_is_unavailable() -> None:
    firewall = HostFirewall("dep1", iptables="/nonexistent/iptables")

    with pytest.raises(FirewallUnavailable) as failure:
        firewall.isolate("br-aaa", "ws-a")

    assert failure.value.message == (
        "/nonexistent/iptables is not installed, so workspaces can reach services on this host."
    )


def test_a_process_that_is_not_root_is_told_so() -> None:
    def not_root(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        message = "iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)"
        return subprocess.CompletedProcess(list(argv), 4, "", message)

    with pytest.raises(FirewallUnavailable) as failure:
        HostFirewall("dep1", runner=not_root).probe()

    assert failure.value.message.startswith("iptables refused this process (iptables v1.8.9")
    assert failure.value.message.endswith("so workspaces can reach services on this host.")


def test_other_iptables_failures_are_runtime_failures() -> None:
    iptables = FakeIptables()

    def broken(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        if argv[2] == "-A":
            return subprocess.CompletedProcess(list(argv), 2, "", "iptables: Invalid argument.")
        return iptables(argv)

    with pytest.raises(RuntimeFailure) as failure:
        HostFirewall("dep1", runner=broken).isolate("br-aaa", "ws-a")

    assert not isinstance(failure.value, FirewallUnavailable)
    assert failure.value.message.startswith("Host firewall: `iptables -A DOCKYARD-INPUT -i br-aaa")
    assert failure.value.message.endswith("failed: iptables: Invalid argument.")


def test_a_fresh_bridge_is_isolated_without_a_check_first() -> None:
    # Each iptables call waits for the xtables lock the engine holds while it makes networks: a bridge made
    # just now cannot have rules yet, so a burst of starts skips the -C per network.
    iptables = FakeIptables()
    firewall = HostFirewall("dep1", runner=iptables)
    firewall.probe()
    iptables.calls.clear()

    assert firewall.isolate("br-new", "ws-n", fresh=True) is True

    assert iptables.calls == [
        [
            "iptables",
            "-w",
            "-A",
            CHAIN,
            "-i",
            "br-new",
            "-m",
            "comment",
            "--comment",
            "dockyard:dep1:ws-n",
            *REJECT,
        ]
    ]
    assert firewall.isolated_bridges() == {"br-new": "ws-n"}


def test_an_allowlist_bridge_is_redirected_to_the_intercepting_port_until_released() -> None:
    iptables = FakeIptables()
    firewall = HostFirewall("dep1", runner=iptables)
    firewall.isolate("br-aaa", "ws-a")
    firewall.intercept("br-aaa", "ws-a", "10.238.0.0/24", 3129)
    firewall.intercept("br-aaa", "ws-a", "10.238.0.0/24", 3129)
    firewall.forward("br-aaa", "ws-a", "10.238.0.0/24", ["192.0.2.0/24"])

    assert iptables.chains["nat/PREROUTING"] == [
        ["-i", "br-aaa", "-p", "tcp", "!", "-d", "10.238.0.0/24", "-m", "comment", "--comment",
         "dockyard:dep1:ws-a", "-j", "REDIRECT", "--to-ports", "3129"],
    ]  # fmt: skip
    assert len(iptables.chains["DOCKER-USER"]) == 2
    assert firewall.release("br-aaa") == 1
    assert iptables.chains["nat/PREROUTING"] == iptables.chains["DOCKER-USER"] == []
    assert iptables.chains["nat/POSTROUTING"] == []


NETWORKS = {"br-net-a": ("dockyard-net-ws-a", "ws-a")}


def _isolated_bridge() -> tuple[FakeIptables, BridgeIsolation]:
    """One deployment's isolation with the bridge of NETWORKS isolated."""
    iptables = FakeIptables()
    isolation = BridgeIsolation("dep1")
    isolation.firewall = HostFirewall("dep1", runner=iptables)
    isolation.isolate("net-a", "ws-a", lambda line: None)
    return iptables, isolation


def test_a_flushed_input_chain_leaves_every_bridge_open_until_repaired() -> None:
    iptables, isolation = _isolated_bridge()
    assert isolation.report(NETWORKS)[0].ok
    # `iptables -F` on INPUT alone: this deployment's rules are all still in the chain, and do nothing.
    iptables.chains["INPUT"] = []
    iptables.chains[CHAIN].pop(0)  # and the rule for replies, as a flush of the chain's first rule would

    assert isolation.report(NETWORKS)[0].missing == ("dockyard-net-ws-a",)

    assert isolation.repair(NETWORKS).missing == ("dockyard-net-ws-a",)
    assert iptables.chains["INPUT"] == [["-j", CHAIN]]
    assert iptables.chains[CHAIN][0] == [
        "-m",
        "conntrack",
        "--ctstate",
        "RELATED,ESTABLISHED",
        "-j",
        "RETURN",
    ]
    assert isolation.report(NETWORKS)[0].ok


def test_an_allowlist_bridge_is_served_only_with_its_opening_and_its_redirect() -> None:
    iptables = FakeIptables()
    isolation = BridgeIsolation("dep1")
    isolation.firewall = firewall = HostFirewall("dep1", runner=iptables)
    for bridge, workspace in (("br-aaa", "ws-a"), ("br-bbb", "ws-b")):
        firewall.isolate(bridge, workspace)
        firewall.open(bridge, workspace, "10.238.0.1", tcp=(3128, 3129), udp=(53,))
        firewall.intercept(bridge, workspace, "10.238.0.0/24", 3129)
    assert isolation.unserved({"br-aaa", "br-bbb"}) == set()

    iptables.chains["nat/PREROUTING"] = [r for r in iptables.chains["nat/PREROUTING"] if "br-aaa" not in r]
    iptables.chains[CHAIN] = [r for r in iptables.chains[CHAIN] if "br-bbb" not in r or "-d" not in r]

    assert isolation.unserved({"br-aaa", "br-bbb"}) == {"br-aaa", "br-bbb"}
    firewall.open("br-bbb", "ws-b", "10.238.0.1", tcp=(3128, 3129), udp=(53,))
    assert isolation.unserved({"br-aaa", "br-bbb"}) == {"br-aaa"}


def test_a_deleted_chain_is_reported_missing_and_made_again() -> None:
    iptables, isolation = _isolated_bridge()
    # A reload that restores a saved rule set without the chain (and so without INPUT's jump to it).
    del iptables.chains[CHAIN]
    iptables.chains["INPUT"] = []

    assert isolation.report(NETWORKS)[0].missing == ("dockyard-net-ws-a",)

    isolation.repair(NETWORKS)
    assert iptables.chains["INPUT"] == [["-j", CHAIN]]
    assert isolation.report(NETWORKS)[0].ok
