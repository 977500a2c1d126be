"""Service addresses on the test cluster, which has no kube-proxy (scripts/kubernetes.sh runs none).

`ServiceRoutes` does for a few Services what kube-proxy's iptables mode does on a real node: a DNAT from the
Service's cluster IP and port to its ready endpoints (one chosen at random per connection, or per client address
for `sessionAffinity: ClientIP`, by the `recent` match as kube-proxy does), kept in step with the Endpoints
objects. Being DNAT on the node, the client's address is kept, so the hub still sees an agent's
connection come from its own pod. The API server's Service (`kubernetes.default`, 10.254.0.1:443, what in-cluster
clients dial) goes to a relay on docker0's address, since the API server listens on loopback only and a DNAT
from the bridge to loopback is dropped. The rules live in one chain of their own, removed by `close`.
"""

from __future__ import annotations

import contextlib
import hashlib
import select
import socket
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import kubernetes.client
from kubernetes.client.exceptions import ApiException

# docker0's address: the test cluster's pods sit on Docker's default bridge and reach the host there.
BRIDGE_ADDRESS = "172.17.0.1"
API_SERVICE = ("10.254.0.1", 443)


@dataclass(frozen=True)
class Route:
    namespace: str
    name: str
    cluster_ip: str
    port: int
    target_port: int


class TcpRelay:
    """Copies each connection to `target` both ways, one thread per connection."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.target = target
        self._server = socket.create_server(listen)
        self.address: tuple[str, int] = self._server.getsockname()[:2]
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True, name="test-relay").start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        with (
            client,
            contextlib.suppress(OSError),
            socket.create_connection(self.target, timeout=10) as upstream,
        ):
            upstream.settimeout(None)
            pair = {client: upstream, upstream: client}
            while not self._closed.is_set():
                ready, _, _ = select.select(list(pair), [], [], 1.0)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    pair[sock].sendall(data)

    def close(self) -> None:
        self._closed.set()
        self._server.close()


def _iptables(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["iptables", "-w", "-t", "nat", *args], capture_output=True, text=True, check=False)


class ServiceRoutes:
    """Keeps `chain` routing the routes' cluster IPs to their ready endpoints until `close`."""

    def __init__(
        self,
        api: kubernetes.client.ApiClient,
        routes: Sequence[Route],
        *,
        chain: str,
        api_target: tuple[str, int],
    ) -> None:
        self._core = kubernetes.client.CoreV1Api(api)
        self._routes = list(routes)
        self._chain = chain
        self._relay = TcpRelay((BRIDGE_ADDRESS, 0), api_target)
        self._rules: list[str] = []
        self._endpoint_chains: set[str] = set()
        self._closed = threading.Event()
        _iptables("-N", chain)
        for address in [API_SERVICE[0], *(r.cluster_ip for r in self._routes)]:
            for hook in (["PREROUTING", "-i", "docker0"], ["OUTPUT"]):
                _iptables("-I", hook[0], *hook[1:], "-d", f"{address}/32", "-p", "tcp", "-j", chain)
        self._sync()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="test-service-routes")
        self._thread.start()

    def _endpoints(self, route: Route) -> list[str]:
        try:
            found = self._core.read_namespaced_endpoints(route.name, route.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return []
            raise
        return sorted(a.ip for subset in found.subsets or [] for a in subset.addresses or [])

    def _affinity(self, route: Route) -> bool:
        try:
            service = self._core.read_namespaced_service(route.name, route.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return service.spec.session_affinity == "ClientIP"

    def _sync(self) -> None:
        ip, port = API_SERVICE
        relay = f"{self._relay.address[0]}:{self._relay.address[1]}"
        rules = [f"-A {self._chain} -d {ip}/32 -p tcp --dport {port} -j DNAT --to-destination {relay}"]
        chains: set[str] = set()
        for route in self._routes:
            endpoints = self._endpoints(route)
            sticky = self._affinity(route)
            match = f"-d {route.cluster_ip}/32 -p tcp --dport {route.port}"
            targets = []
            for endpoint in endpoints:
                # One chain per endpoint, as kube-proxy's KUBE-SEP-*: it remembers the client for affinity.
                name = "DDT-" + hashlib.sha256(f"{route}{endpoint}".encode()).hexdigest()[:16].upper()
                chains.add(name)
                targets.append(name)
                recent = f" -m recent --name {name} --mask 255.255.255.255 --rsource --set" if sticky else ""
                rules.append(
                    f"-A {name} -p tcp{recent} -j DNAT --to-destination {endpoint}:{route.target_port}"
                )
                if sticky:
                    rules.append(
                        f"-A {self._chain} {match} -m recent --name {name} --mask 255.255.255.255 --rsource "
                        f"--rcheck --seconds 10800 --reap -j {name}"
                    )
            for index, name in enumerate(targets):
                # kube-proxy's own spread: the n-th of k remaining endpoints takes 1/(k-n) of what reaches it.
                left = len(targets) - index
                chance = f" -m statistic --mode random --probability {1 / left:.5f}" if left > 1 else ""
                rules.append(f"-A {self._chain} {match}{chance} -j {name}")
            if not endpoints:
                # Refused, as kube-proxy does (nothing listens on port 1), rather than routed off this machine.
                rules.append(f"-A {self._chain} {match} -j DNAT --to-destination {BRIDGE_ADDRESS}:1")
        if rules == self._rules:
            return
        # Chains declared in iptables-restore are emptied first: the new rules replace the old at once.
        declared = "".join(f":{c} - [0:0]\n" for c in [self._chain, *sorted(chains)])
        script = f"*nat\n{declared}" + "".join(f"{r}\n" for r in rules) + "COMMIT\n"
        done = subprocess.run(
            ["iptables-restore", "-w", "--noflush"], input=script, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"iptables-restore failed: {done.stderr}")
        for stale in self._endpoint_chains - chains:
            _iptables("-F", stale)
            _iptables("-X", stale)
        self._rules, self._endpoint_chains = rules, chains

    def _loop(self) -> None:
        while not self._closed.wait(0.5):
            with contextlib.suppress(ApiException, RuntimeError, OSError):
                self._sync()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=10)
        for address in [API_SERVICE[0], *(r.cluster_ip for r in self._routes)]:
            for hook in (["PREROUTING", "-i", "docker0"], ["OUTPUT"]):
                while (
                    _iptables(
                        "-D", hook[0], *hook[1:], "-d", f"{address}/32", "-p", "tcp", "-j", self._chain
                    ).returncode
                    == 0
                ):
                    pass
        _iptables("-F", self._chain)
        _iptables("-X", self._chain)
        for chain in self._endpoint_chains:
            _iptables("-F", chain)
            _iptables("-X", chain)
        self._relay.close()
