"""The Docker runtime's side of the host firewall: which bridges have their rules, reports, repairs.

`firewall.py` speaks iptables; this module decides when to call it. A bridge whose rules this process installed
(or saw) is not checked again on every start; a resync every FIREWALL_RESYNC seconds, `doctor` and `--prune`
compare the rules with the deployment's networks instead. When iptables cannot be used at all the runtime keeps
working, loudly: one error in the server log (again only when the reason changes), a warning in every build log
that makes a network, and `doctor` reports it.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence

from dockyard import logs as logging
from dockyard.runtimes.base import HostIsolation, LogSink, RuntimeFailure
from dockyard.runtimes.docker import naming
from dockyard.runtimes.docker.firewall import FirewallUnavailable, HostFirewall

log = logging.get(__name__)

# How often the rules are compared with the networks (and repaired): a firewall reload or a reboot drops them.
FIREWALL_RESYNC = 60.0

# A deployment's bridge networks: bridge -> (network name, workspace id).
Networks = dict[str, tuple[str, str]]


class BridgeIsolation:
    def __init__(
        self, deployment: str, *, allowed_ports: Sequence[int] = (), iptables: str = "iptables"
    ) -> None:
        self.firewall = HostFirewall(deployment, allowed_ports=allowed_ports, iptables=iptables)
        self._isolated: set[str] = set()
        self._error = ""
        self._next_resync = 0.0

    def probe(self) -> None:
        """Make the chain, or say at once (at server start) that workspaces are not kept off the host."""
        try:
            self.firewall.probe()
        except RuntimeFailure as exc:
            self._failed(exc)

    @property
    def available(self) -> bool:
        """Whether the last attempt to program the host firewall worked."""
        return not self._error

    def _failed(self, exc: RuntimeFailure) -> None:
        if exc.message != self._error:
            log.error(
                "host firewall unavailable: workspaces can reach services listening on this host",
                error=exc.message,
                detail=exc.detail,
            )
        self._error = exc.message

    def forget(self) -> None:
        """Check every bridge again on its next use (the rules were changed behind this process's back)."""
        self._isolated.clear()

    def isolate(self, network_id: str, workspace_id: str, log: LogSink, *, fresh: bool = False) -> None:
        """Refuse the network's connections to the host, unless this process knows the rules are there
        (`fresh`: the network was made just now, see `HostFirewall.isolate`)."""
        bridge = naming.bridge_name(network_id)
        if bridge in self._isolated:
            return
        try:
            self.firewall.isolate(bridge, workspace_id, fresh=fresh)
        except FirewallUnavailable as exc:
            self._failed(exc)
            log(f"WARNING: {exc.message}")
            return
        self._isolated.add(bridge)

    def open(
        self,
        network_id: str,
        workspace_id: str,
        address: str,
        *,
        tcp: Sequence[int],
        udp: Sequence[int],
        log: LogSink,
    ) -> None:
        """Let the network reach these ports of `address` on the host (its egress proxy)."""
        try:
            self.firewall.open(naming.bridge_name(network_id), workspace_id, address, tcp=tcp, udp=udp)
        except FirewallUnavailable as exc:
            # Without iptables nothing on the host is closed to begin with: the proxy is reachable anyway.
            self._failed(exc)
            log(f"WARNING: {exc.message}")

    def forward(
        self, network_id: str, workspace_id: str, subnet: str, networks: Sequence[str], *, log: LogSink
    ) -> None:
        """Let the network reach these CIDRs directly (an allow-list's address entries)."""
        try:
            self.firewall.forward(naming.bridge_name(network_id), workspace_id, subnet, networks)
        except FirewallUnavailable as exc:
            self._failed(exc)
            log(f"WARNING: {exc.message}; the allow-list's CIDRs are reachable through the proxy only")

    def intercept(self, network_id: str, workspace_id: str, subnet: str, port: int, *, log: LogSink) -> None:
        """Send the network's TCP connections beyond its subnet to the egress proxy's intercepting port."""
        try:
            self.firewall.intercept(naming.bridge_name(network_id), workspace_id, subnet, port)
        except FirewallUnavailable as exc:
            self._failed(exc)
            log(f"WARNING: {exc.message}; only programs that use the proxy reach the allow-list's names")

    def release(self, network_id: str) -> None:
        bridge = naming.bridge_name(network_id)
        self._isolated.discard(bridge)
        try:
            self.firewall.release(bridge)
        except FirewallUnavailable as exc:
            # Nothing was installed then; a rule left by an earlier run is stale and harmless (its bridge is
            # gone, and bridge names are never reused), and doctor --prune removes it.
            self._failed(exc)

    def report(self, networks: Networks) -> tuple[HostIsolation, Networks]:
        """The state of the rules for these networks, and the missing ones."""
        try:
            isolated = self.firewall.isolated_bridges()
            hooked = self.firewall.hooked()
        except FirewallUnavailable as exc:
            self._failed(exc)
            names = tuple(sorted(name for name, _ in networks.values()))
            return HostIsolation(False, exc.message, missing=names), {}
        self._error = ""
        if not hooked:
            # The rules are there but INPUT no longer reaches them: every bridge is open to the host.
            isolated = {}
        self._isolated = set(isolated) & set(networks)
        missing = {bridge: found for bridge, found in networks.items() if bridge not in isolated}
        stale = tuple(sorted(bridge for bridge in isolated if bridge not in networks))
        names = tuple(sorted(name for name, _ in missing.values()))
        return HostIsolation(True, missing=names, stale=stale), missing

    def repair(self, networks: Networks) -> HostIsolation:
        """Add the missing rules and remove the stale ones; returns what was missing or stale."""
        report, missing = self.report(networks)
        if report.enforced:
            if missing:
                self.firewall.probe()  # puts back INPUT's jump and the rule for replies, if a flush took them
            for bridge, (_, workspace_id) in missing.items():
                self.firewall.isolate(bridge, workspace_id)
                self._isolated.add(bridge)
            for bridge in report.stale:
                self.firewall.release(bridge)
        return report

    def unserved(self, bridges: Collection[str]) -> set[str]:
        """Those of these bridges (of allowlist workspaces) whose egress proxy rules are missing."""
        try:
            served = self.firewall.served_bridges()
        except FirewallUnavailable as exc:
            self._failed(exc)
            return set()
        return set(bridges) - served

    def resync_due(self) -> bool:
        if time.monotonic() < self._next_resync:
            return False
        self._next_resync = time.monotonic() + FIREWALL_RESYNC
        return True

    def resync(self, networks: Networks) -> None:
        try:
            report = self.repair(networks)
        except RuntimeFailure as exc:
            log.warning("cannot check the host firewall", error=exc.message)
            return
        if report.enforced and (report.missing or report.stale):
            log.warning("host firewall rules repaired", missing=len(report.missing), stale=len(report.stale))
