"""Choosing a small subnet for each workspace network from a configured pool.

Docker's default address pools give each bridge network a /16 or /20 and run out after about 30 networks. With
a pool, each workspace network gets one /28 (14 addresses; a workspace needs two: its container and the
gateway), so a /16 holds 4096 workspaces.
"""

from __future__ import annotations

import hashlib
import ipaddress
import threading
import time
from collections.abc import Callable
from typing import Any

import docker
import docker.errors

from dockyard.runtimes.base import RuntimeFailure
from dockyard.runtimes.docker.errors import explanation

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# How long one listing of the engine's subnets serves the creates that follow it. Listing every network for
# every create made a burst of N creates cost N full listings on an engine that makes networks one at a time;
# a subnet taken meanwhile by another process is refused by the engine ("overlaps") and the search moves on.
LISTING_TTL = 2.0


class SubnetPool:
    def __init__(self, pool: str, prefix: int) -> None:
        self.pool = ipaddress.ip_network(pool)
        if prefix < self.pool.prefixlen or prefix > self.pool.max_prefixlen - 2:
            raise ValueError(f"cannot cut {pool} into /{prefix} subnets")
        self.prefix = prefix
        self.count = 2 ** (prefix - self.pool.prefixlen)
        # Subnets this process is creating networks in right now; the engine does not list them yet.
        self._reserved: set[Network] = set()
        self._lock = threading.Lock()
        self._listed: list[Network] = []
        self._listed_at = -LISTING_TTL
        self._listing = threading.Lock()

    def candidate(self, index: int) -> Network:
        size = 2 ** (self.pool.max_prefixlen - self.prefix)
        return ipaddress.ip_network((int(self.pool.network_address) + index * size, self.prefix))

    def create_in_pool(
        self, client: docker.DockerClient, workspace_id: str, create: Callable[[str], None]
    ) -> None:
        """Call `create(subnet)` with free subnets until the engine accepts one.

        Free means: overlapping no network the engine has, and not being tried by another thread here. The
        search starts at a place derived from the workspace id, so control-plane processes sharing one engine
        seldom try the same subnet; when they do, the engine refuses the second and the search moves on.
        """
        in_use = [net for net in self._engine_subnets(client) if net.version == self.pool.version]
        start = int(hashlib.sha256(workspace_id.encode()).hexdigest(), 16) % self.count
        for step in range(self.count):
            subnet = self.candidate((start + step) % self.count)
            with self._lock:
                if subnet in self._reserved or any(subnet.overlaps(net) for net in in_use):
                    continue
                self._reserved.add(subnet)
            try:
                create(str(subnet))
                with self._listing:
                    self._listed.append(subnet)
                return
            except docker.errors.APIError as exc:
                if exc.status_code == 403 and "overlaps" in explanation(exc):
                    in_use.append(subnet)
                    with self._listing:
                        self._listed.append(subnet)
                    continue
                raise
            finally:
                with self._lock:
                    self._reserved.discard(subnet)
        raise RuntimeFailure(
            f"No free /{self.prefix} subnet is left in the workspace subnet pool {self.pool}."
        )

    def _engine_subnets(self, client: docker.DockerClient) -> list[Network]:
        """The engine's subnets as listed at most LISTING_TTL ago, plus those this pool made since."""
        with self._listing:
            if time.monotonic() - self._listed_at > LISTING_TTL:
                self._listed = _list_subnets(client)
                self._listed_at = time.monotonic()
            return list(self._listed)


def _list_subnets(client: docker.DockerClient) -> list[Network]:
    subnets: list[Network] = []
    networks: list[dict[str, Any]] = client.api.networks()
    for network in networks:
        for config in (network.get("IPAM") or {}).get("Config") or []:
            if config.get("Subnet"):
                subnets.append(ipaddress.ip_network(config["Subnet"], strict=False))
    return subnets
