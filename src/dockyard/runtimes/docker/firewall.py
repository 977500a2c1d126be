"""Host firewall rules that keep workspaces off the host's own services.

A bridge network makes the host a member of every workspace network: the bridge holds the gateway address, and
the kernel answers on any of the host's addresses (other bridges, eth0) to packets that arrive on the bridge.
Docker programs FORWARD (traffic between networks) but never INPUT (traffic to the host itself), so without
these rules any service listening on 0.0.0.0 on the host is open to every workspace. Dockyard adds, with
iptables:

    INPUT           -j DOCKYARD-INPUT                                            (first, so no ACCEPT comes before)
    DOCKYARD-INPUT  -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN         (replies to the host's connections)
    DOCKYARD-INPUT  -i br-<net> -p tcp --dport <port> -m comment --comment dockyard:<deployment>:<workspace> -j RETURN
    DOCKYARD-INPUT  -i br-<net> -m comment --comment dockyard:<deployment>:<workspace> -j REJECT

The REJECT answers with ICMP port-unreachable, so a workspace's connect fails at once with ECONNREFUSED instead
of hanging. The per-port RETURN rules are what Dockyard serves workspaces over TCP on purpose (none today: agents
use a unix socket). One chain serves every deployment on the host; a deployment adds, lists and removes only
rules whose comment names it. Packets in the chain that match no rule go on through INPUT unchanged.

Workspace containers have IPv6 turned off by the engine (networks are made without it), so IPv4 rules suffice.
"""

from __future__ import annotations

import shlex
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dockyard.runtimes.base import RuntimeFailure

CHAIN = "DOCKYARD-INPUT"
# Docker's chain for the administrator's FORWARD rules, run before its own: where an allow-list's CIDRs are let
# through an internal network.
FORWARD_CHAIN = "DOCKER-USER"
COMMENT_PREFIX = "dockyard:"
_ESTABLISHED = ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "RETURN"]
_TIMEOUT = 30.0

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


class FirewallUnavailable(RuntimeFailure):
    """iptables is missing or refuses this process (not root): workspaces are not kept off the host."""


@dataclass(frozen=True)
class Rule:
    """One rule of this deployment in the chain, as `iptables -S` prints it."""

    bridge: str
    workspace_id: str
    spec: tuple[str, ...]  # the arguments after `-A CHAIN`


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=_TIMEOUT, check=False)


class HostFirewall:
    """The INPUT rules of one deployment's workspace bridges."""

    def __init__(
        self,
        deployment: str,
        *,
        allowed_ports: Sequence[int] = (),
        iptables: str = "iptables",
        runner: Runner = _run,
    ) -> None:
        self.deployment = deployment
        self.allowed_ports = tuple(allowed_ports)
        self.iptables = iptables
        self._runner = runner
        self._chain_ready = False
        self._lock = threading.Lock()

    # -- running iptables -------------------------------------------------------------------------------

    def _call(self, *args: str) -> subprocess.CompletedProcess[str]:
        # -w: wait for the xtables lock instead of failing while dockerd or another process holds it.
        argv = [self.iptables, "-w", *args]
        try:
            return self._runner(argv)
        except FileNotFoundError as exc:
            raise FirewallUnavailable(
                f"{self.iptables} is not installed, so workspaces can reach services on this host.",
                detail=str(exc),
            ) from exc
        except PermissionError as exc:
            raise FirewallUnavailable(
                f"{self.iptables} cannot be run by this process, so workspaces can reach services on this "
                "host.",
                detail=str(exc),
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise RuntimeFailure(f"{self.iptables} did not finish within {_TIMEOUT:g} s.") from exc

    def _must(self, *args: str) -> None:
        result = self._call(*args)
        if result.returncode != 0:
            raise self._failure(args, result)

    def _check(self, *args: str) -> bool:
        """Run `-C …`: True when the rule exists; False when it does not (or its chain does not)."""
        result = self._call("-C", *args)
        if result.returncode == 0:
            return True
        if result.returncode == 1:
            return False
        raise self._failure(("-C", *args), result)

    def _failure(self, args: Sequence[str], result: subprocess.CompletedProcess[str]) -> RuntimeFailure:
        message = (result.stderr or result.stdout).strip()
        command = shlex.join([self.iptables, *args])
        if result.returncode == 4 or "Permission denied" in message or "you must be root" in message:
            return FirewallUnavailable(
                f"{self.iptables} refused this process ({message or 'permission denied'}), so workspaces can "
                "reach services on this host.",
                detail=command,
            )
        return RuntimeFailure(f"Host firewall: `{command}` failed: {message}", detail=command)

    # -- the chain --------------------------------------------------------------------------------------

    def probe(self) -> None:
        """Raise FirewallUnavailable unless this process can read and change the host's rules."""
        self._ensure_chain(force=True)

    def hooked(self) -> bool:
        """Whether the chain lets replies through and INPUT jumps to it. A flush of INPUT alone (a firewall
        tool reloading its own rules) keeps the chain and every rule in it, and they then do nothing."""
        # The chain first: a check of a jump to a chain that does not exist is an error (2), not a "no".
        return self._check(CHAIN, *_ESTABLISHED) and self._check("INPUT", "-j", CHAIN)

    def _ensure_chain(self, *, force: bool = False) -> None:
        with self._lock:
            if self._chain_ready and not force:
                return
            # -N fails harmlessly when the chain exists (another deployment or an earlier run made it).
            self._call("-N", CHAIN)
            if not self._check(CHAIN, *_ESTABLISHED):
                self._must("-I", CHAIN, "1", *_ESTABLISHED)
            if not self._check("INPUT", "-j", CHAIN):
                self._must("-I", "INPUT", "1", "-j", CHAIN)
            self._chain_ready = True

    # -- per bridge -------------------------------------------------------------------------------------

    def _comment(self, workspace_id: str) -> str:
        return f"{COMMENT_PREFIX}{self.deployment}:{workspace_id}"

    def specs(self, bridge: str, workspace_id: str) -> list[list[str]]:
        """The rules for one workspace bridge, in order: the allowed ports, then the refusal."""
        tag = ["-m", "comment", "--comment", self._comment(workspace_id)]
        allowed = [
            ["-i", bridge, "-p", "tcp", "-m", "tcp", "--dport", str(port), *tag, "-j", "RETURN"]
            for port in self.allowed_ports
        ]
        return [*allowed, ["-i", bridge, *tag, "-j", "REJECT", "--reject-with", "icmp-port-unreachable"]]

    def openings(
        self, bridge: str, workspace_id: str, address: str, *, tcp: Sequence[int], udp: Sequence[int]
    ) -> list[list[str]]:
        """RETURN rules for ports of one host address (the bridge's own gateway), e.g. the egress proxy's."""
        tag = ["-m", "comment", "--comment", self._comment(workspace_id)]
        return [
            [
                "-i",
                bridge,
                "-d",
                f"{address}/32",
                "-p",
                proto,
                "-m",
                proto,
                "--dport",
                str(port),
                *tag,
                "-j",
                "RETURN",
            ]
            for proto, ports in (("tcp", tcp), ("udp", udp))
            for port in ports
        ]

    def open(
        self, bridge: str, workspace_id: str, address: str, *, tcp: Sequence[int], udp: Sequence[int]
    ) -> None:
        """Install the openings that are missing, ahead of the bridge's REJECT (whenever that was added)."""
        self._ensure_chain()
        for spec in self.openings(bridge, workspace_id, address, tcp=tcp, udp=udp):
            if not self._check(CHAIN, *spec):
                # Position 2: after the rule for replies, before any REJECT.
                self._must("-I", CHAIN, "2", *spec)

    def forwards(
        self, bridge: str, workspace_id: str, subnet: str, networks: Sequence[str]
    ) -> list[list[str]]:
        """(table, chain, rule...) letting an internal network reach these CIDRs directly: accepted in
        DOCKER-USER (which FORWARD runs before Docker's isolation chains drop the traffic), with replies, and
        masqueraded like an ordinary bridge's traffic."""
        tag = ["-m", "comment", "--comment", self._comment(workspace_id)]
        rules = []
        for cidr in networks:
            rules += [
                ["filter", FORWARD_CHAIN, "-d", cidr, "-i", bridge, *tag, "-j", "ACCEPT"],
                [
                    "filter",
                    FORWARD_CHAIN,
                    "-s",
                    cidr,
                    "-o",
                    bridge,
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "RELATED,ESTABLISHED",
                    *tag,
                    "-j",
                    "ACCEPT",
                ],
                ["nat", "POSTROUTING", "-s", subnet, "-d", cidr, "!", "-o", bridge, *tag, "-j", "MASQUERADE"],
            ]
        return rules

    def redirects(self, bridge: str, workspace_id: str, subnet: str, port: int) -> list[list[str]]:
        """(table, chain, rule...) sending every TCP connection the network opens beyond its own subnet to the
        egress proxy's intercepting port on the bridge's address (REDIRECT picks the incoming interface's
        address, the gateway); the allow-list's CIDRs included, so each connection is checked and logged."""
        tag = ["-m", "comment", "--comment", self._comment(workspace_id)]
        return [
            [
                "nat",
                "PREROUTING",
                "-i",
                bridge,
                "-p",
                "tcp",
                "!",
                "-d",
                subnet,
                *tag,
                "-j",
                "REDIRECT",
                "--to-ports",
                str(port),
            ],
        ]

    def forward(self, bridge: str, workspace_id: str, subnet: str, networks: Sequence[str]) -> None:
        self._insert(self.forwards(bridge, workspace_id, subnet, networks))

    def intercept(self, bridge: str, workspace_id: str, subnet: str, port: int) -> None:
        self._insert(self.redirects(bridge, workspace_id, subnet, port))

    def _insert(self, rules: list[list[str]]) -> None:
        for table, chain, *spec in rules:
            result = self._call("-t", table, "-C", chain, *spec)
            if result.returncode == 0:
                continue
            self._must("-t", table, "-I", chain, "1", *spec)

    def _release_forwards(self, bridge: str) -> None:
        prefix = f"{COMMENT_PREFIX}{self.deployment}:"
        for table, chain in (("filter", FORWARD_CHAIN), ("nat", "POSTROUTING"), ("nat", "PREROUTING")):
            result = self._call("-t", table, "-S", chain)
            if result.returncode != 0:
                continue
            for line in result.stdout.splitlines():
                if prefix not in line or bridge not in line:
                    continue
                words = shlex.split(line)
                spec = tuple(words[2:])
                comment = _option(spec, "--comment") or ""
                if words[:2] == ["-A", chain] and comment.startswith(prefix) and bridge in spec:
                    self._call("-t", table, "-D", chain, *spec)

    def isolate(self, bridge: str, workspace_id: str, *, fresh: bool = False) -> bool:
        """Install the bridge's rules unless they are there; True when something was added.

        `fresh`: the bridge was made just now, so no rule can name it yet (bridge names come from network ids,
        never reused) and the check is skipped: each iptables call waits for the xtables lock, which the engine
        holds while it makes networks and starts containers.
        """
        specs = self.specs(bridge, workspace_id)
        self._ensure_chain()
        if not fresh and self._check(CHAIN, *specs[-1]):
            return False
        for spec in specs:
            result = self._call("-A", CHAIN, *spec)
            if result.returncode != 0:
                # The chain may have been flushed away behind this process's back (a firewall reload).
                self._ensure_chain(force=True)
                self._must("-A", CHAIN, *spec)
        return True

    def release(self, bridge: str) -> int:
        """Remove this deployment's rules for the bridge; returns how many were removed."""
        rules = [rule for rule in self.rules() if rule.bridge == bridge]
        for rule in rules:
            self._call("-D", CHAIN, *rule.spec)
        self._release_forwards(bridge)
        return len(rules)

    def rules(self) -> list[Rule]:
        """This deployment's rules in the chain (none when the chain does not exist)."""
        result = self._call("-S", CHAIN)
        if result.returncode == 1:  # no such chain: nothing was ever installed here
            return []
        if result.returncode != 0:
            raise self._failure(("-S", CHAIN), result)
        found = []
        prefix = f"{COMMENT_PREFIX}{self.deployment}:"
        for line in result.stdout.splitlines():
            # Other deployments' rules share the chain on a shared engine: skip them before the (slow) split.
            if prefix not in line:
                continue
            words = shlex.split(line)
            if words[:2] != ["-A", CHAIN]:
                continue
            spec = tuple(words[2:])
            comment = _option(spec, "--comment")
            bridge = _option(spec, "-i")
            if comment and bridge and comment.startswith(prefix):
                found.append(Rule(bridge, comment.removeprefix(prefix), spec))
        return found

    def isolated_bridges(self) -> dict[str, str]:
        """Bridge -> workspace id, for the bridges whose refusal rule is in place."""
        return {rule.bridge: rule.workspace_id for rule in self.rules() if "REJECT" in rule.spec}

    def served_bridges(self) -> set[str]:
        """The bridges whose egress proxy is reachable and intercepting: an opening to an address of the host
        in the chain, and the REDIRECT in nat PREROUTING."""
        opened = {rule.bridge for rule in self.rules() if "-d" in rule.spec}
        result = self._call("-t", "nat", "-S", "PREROUTING")
        if result.returncode != 0:
            raise self._failure(("-t", "nat", "-S", "PREROUTING"), result)
        prefix = f"{COMMENT_PREFIX}{self.deployment}:"
        redirected = set()
        for line in result.stdout.splitlines():
            if prefix in line and "REDIRECT" in line:
                bridge = _option(tuple(shlex.split(line)), "-i")
                if bridge:
                    redirected.add(bridge)
        return opened & redirected


def _option(spec: Sequence[str], name: str) -> str | None:
    for index, word in enumerate(spec[:-1]):
        if word == name:
            return spec[index + 1]
    return None
