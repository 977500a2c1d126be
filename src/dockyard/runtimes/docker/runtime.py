"""`DockerRuntime`: workspaces as Docker containers, one network and one home volume each.

Per workspace `w`:
- network: for egress "all", a port on the deployment bridge `dockyard-bridge-<deployment>` plugged in by the
  runtime (`bridge.py`), or with `workspace_bridge="own"` a network `dockyard-ws-w` of its own; for an
  allowlist an internal network `dockyard-ws-w` whose way out is the egress proxy; none for egress "none",
  whose container has loopback only,
- volume `dockyard-home-w` at /home/<user> (bound to a size-limited file system of its own when the template
  sets `resources.disk`, see `disks.py`),
- container `dockyard-ws-w`: docker-init as PID 1, then the setup script of `bootstrap.py` as root, then the
  workspace command as the user, with every capability dropped but those the setup step needs.

Everything made carries the deployment's id (`dockyard.deployment`); listings (observe_all, managed_resources)
see only this deployment's objects, so several servers can share one engine. Each network's bridge gets host
firewall rules (`firewall.py`) that refuse the workspace's connections to the host's own addresses.

The container carries a hash of everything it was created from (`dockyard.config-hash`). A start finds a
container with the same hash and starts it again, which keeps its state outside the home volume (a fast
resume); a different hash means the container is removed and created afresh.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.models.containers
import docker.types
import docker.utils

from dockyard import logs
from dockyard.runtimes.base import (
    ContainerConflict,
    ContainerState,
    EgressProxy,
    HostCapacity,
    HostIsolation,
    ImageSpec,
    LogSink,
    ManagedResource,
    Observation,
    RuntimeFailure,
    network_class,
)
from dockyard.runtimes.docker import bootstrap, bridge, builds, containers, disks, naming, states
from dockyard.runtimes.docker.errors import explanation, translate
from dockyard.runtimes.docker.isolation import BridgeIsolation, Networks
from dockyard.runtimes.docker.spec import AgentFolders, WorkspaceSpec, from_plan
from dockyard.runtimes.docker.subnets import SubnetPool
from dockyard.runtimes.plan import Capabilities, Egress, LinkKind, WorkspacePlan
from dockyard_sdk.egress import EntryKind, parse_entries

_log = logs.get("dockyard.runtimes.docker")
DEFAULT_ENGINE = "unix:///var/run/docker.sock"
# Tells the agent the home folder's size limit, so that it reports usage against it.
DISK_LIMIT_VARIABLE = "DOCKYARD_HOME_DISK_LIMIT"
# A stop is SIGTERM (docker-init forwards it to the workload), then SIGKILL after the timeout.
STOP_TIMEOUT = 5
# Network creates this process has in the engine at once. The engine makes networks one at a time under one
# lock, which its container starts need too: fifty creates waiting there in no order slowed every start of a
# burst, while a short queue here hands networks out first come, first served and leaves the engine free for
# the containers whose networks are made.
NETWORK_CONCURRENCY = 2
# Seconds one engine call may take. In a burst the engine answers each call later the more starts it runs at
# once (the bare baseline's `docker` CLI waits as long as it takes): 50 starts at once at a load average of
# 60-70 had calls of their starts fail after 60 s, the earlier limit, while the engine was still working.
ENGINE_TIMEOUT = 180.0


def engine_url() -> str:
    """The engine's address: DOCKER_HOST, or the default unix socket."""
    return os.environ.get("DOCKER_HOST") or DEFAULT_ENGINE


class DockerRuntime:
    """The `Runtime` protocol over the Docker Engine API.

    The client is made on first use, so a server can start while dockerd is down; every call until the engine
    answers raises RuntimeUnavailable, and the first call after it answers connects.
    """

    name = "docker"

    def __init__(
        self,
        base_url: str | None = None,
        *,
        timeout: float = ENGINE_TIMEOUT,
        build_timeout: float = 3600,
        ready_timeout: float = 60,
        stop_timeout: int = STOP_TIMEOUT,
        max_pool_size: int = 64,
        pull: bool = True,
        subnet_pool: str | None = None,
        subnet_prefix: int = 28,
        deployment: str | None = None,
        host_ports: Sequence[int] = (),
        iptables: str = "iptables",
        disks_dir: Path | None = None,
        network_concurrency: int = NETWORK_CONCURRENCY,
        workspace_bridge: str = "own",
    ) -> None:
        self.base_url = base_url or engine_url()
        self._explicit_url = base_url is not None
        self.timeout = timeout
        self.build_timeout = build_timeout
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.max_pool_size = max_pool_size
        self.pull = pull
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()
        self._capacity: HostCapacity | None = None
        self._build_locks: dict[str, threading.Lock] = {}
        self._network_gate = threading.BoundedSemaphore(network_concurrency)
        # Network lookups and creates run beside the rest of a start (see `_start`). Threads are made on demand
        # and idle ones reused; one per start that is running, at most as many as the engine connections.
        self._networking = ThreadPoolExecutor(max_pool_size, thread_name_prefix="docker-network")
        # Docker's default address pools hold ~30 bridge networks, one per workspace here; a pool of small
        # subnets (a /16 cut into /28s holds 4096) is how a host runs hundreds of workspaces.
        self.subnets = SubnetPool(subnet_pool, subnet_prefix) if subnet_pool else None
        # TCP ports on the host that workspaces may reach (what Dockyard serves them over the network).
        self.host_ports = tuple(host_ports)
        self.iptables = iptables
        if workspace_bridge not in bridge.MODES:
            raise ValueError(
                f"workspace_bridge must be one of {', '.join(bridge.MODES)}, not {workspace_bridge!r}"
            )
        self.workspace_bridge = workspace_bridge
        self.plugs: bridge.DeploymentBridge | None = None
        self._bridge: bridge.Bridge | None = None
        self._bridge_lock = threading.Lock()
        self.deployment: str | None = None
        self.isolation: BridgeIsolation | None = None
        if deployment is not None:
            self.bind_deployment(deployment)
        # Without a folder for home disks, `resources.disk` cannot be enforced and the start says so.
        self.disks = disks.HomeDisks(disks_dir) if disks_dir is not None else None
        self._disks_mounted = False
        self.agent_folders: AgentFolders | None = None
        self.egress: EgressProxy | None = None
        self._egress_refused: set[str] = set()
        self._gpu: bool | None = None

    # -- the deployment ---------------------------------------------------------------------------------

    def bind_deployment(self, deployment: str) -> None:
        if self.deployment is not None and self.deployment != deployment:
            raise ValueError(f"this runtime already serves deployment {self.deployment}, not {deployment}")
        if self.deployment is None:
            self.deployment = deployment
            self.isolation = BridgeIsolation(
                deployment, allowed_ports=self.host_ports, iptables=self.iptables
            )
            self.isolation.probe()
            self._choose_bridge(deployment)

    def _choose_bridge(self, deployment: str) -> None:
        if self.workspace_bridge == "own":
            return
        reason = bridge.unusable_reason(self.base_url)
        if reason is None:
            self.plugs = bridge.DeploymentBridge(deployment)
        elif self.workspace_bridge == "shared":
            raise RuntimeFailure(f"Workspaces cannot share the deployment bridge: {reason}.")
        else:
            _log.info("egress-all workspaces get a network each", reason=reason)

    def bind_agent(self, program_dir: Path, links_dir: Path) -> None:
        self.agent_folders = AgentFolders(program_dir, links_dir)

    def bind_egress(self, proxy: EgressProxy) -> None:
        self.egress = proxy

    def capabilities(self) -> Capabilities:
        return self._capabilities(probe_gpu=True)

    def _capabilities(self, *, probe_gpu: bool) -> Capabilities:
        return Capabilities(
            # The link is a bind mount of a host folder: this engine runs on the server's host.
            agent_links=frozenset({LinkKind.UNIX_SOCKET, LinkKind.NETWORK})
            if self.agent_folders
            else frozenset(),
            # An allowlist workspace sits on an internal network whose only exit is the egress proxy.
            egress=frozenset(Egress) if self.egress is not None else frozenset({Egress.NONE, Egress.ALL}),
            egress_names=self.egress is not None,
            gpu=self._has_gpu() if probe_gpu else False,
            disk_quota=self.disks is not None,
            resume_keeps_root=True,
            host_isolation=self.isolation is not None and self.isolation.available,
            prepared_networks=True,
            bridged_egress=self.plugs is not None,
            extra_mounts=True,
            # Like the agent's folders: a folder of the server's data dir, mounted from this host.
            git_mirrors=self.agent_folders is not None,
        )

    def _has_gpu(self) -> bool:
        # GPUs reach containers through the NVIDIA container runtime; without it a device request fails.
        if self._gpu is None:
            try:
                with translate(self.base_url):
                    info = self.client.info()
            except RuntimeFailure:
                return False
            self._gpu = "nvidia" in (info.get("Runtimes") or {})
        return self._gpu

    def _owner(self) -> str:
        if self.deployment is None:
            raise RuntimeError(
                "DockerRuntime.bind_deployment() must be called before it makes or lists objects"
            )
        return self.deployment

    def _mine(self, labels: dict[str, str] | None, *, legacy: bool = True) -> bool:
        """True for objects of this deployment, and (with `legacy`) for ones made before deployment labels."""
        owner = (labels or {}).get(naming.LABEL_DEPLOYMENT)
        return owner == self._owner() or (legacy and owner is None)

    # -- connection -------------------------------------------------------------------------------------

    @property
    def client(self) -> docker.DockerClient:
        with self._lock:
            if self._client is None:
                params: dict[str, Any] = {} if self._explicit_url else docker.utils.kwargs_from_env()
                params["base_url"] = self.base_url
                with translate(self.base_url):
                    self._client = docker.DockerClient(
                        **params, timeout=self.timeout, max_pool_size=self.max_pool_size
                    )
                if self.base_url.startswith("unix://"):
                    # No proxy or ~/.netrc applies to a unix socket, and requests looks for both at every call.
                    self._client.api.trust_env = False
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def ping(self) -> None:
        with translate(self.base_url):
            self.client.ping()

    def capacity(self) -> HostCapacity:
        if self._capacity is None:
            with translate(self.base_url):
                info = self.client.info()
            self._capacity = HostCapacity(cpus=float(info["NCPU"]), memory_bytes=int(info["MemTotal"]))
        return self._capacity

    # -- images -----------------------------------------------------------------------------------------

    def ensure_image(self, spec: ImageSpec, log: LogSink) -> str:
        with translate(self.base_url):
            if spec.dockerfile:
                tag = naming.template_image_tag(spec)
                with self._build_lock(tag):
                    return builds.build(
                        self.client,
                        spec,
                        tag,
                        log,
                        timeout=self.build_timeout,
                        labels={naming.LABEL_DEPLOYMENT: self._owner()},
                    )
            if spec.image:
                return builds.local_or_pull(self.client, spec.image, log, pull=self.pull)
        raise ValueError(f"image spec for template {spec.template!r} names neither an image nor a Dockerfile")

    def _build_lock(self, tag: str) -> threading.Lock:
        # Two builds of one tag in this process would do the same work twice; the second waits and finds it.
        with self._lock:
            return self._build_locks.setdefault(tag, threading.Lock())

    # -- workspaces -------------------------------------------------------------------------------------

    def start(
        self, plan: WorkspacePlan, log: LogSink, *, started: threading.Event | None = None
    ) -> Observation:
        # The engine's start returns once the container runs: no outside proof is needed (`started`).
        # Asking the engine about GPUs costs a call; only a plan that wants one needs the answer.
        refusal = self._capabilities(probe_gpu=plan.resources.gpu > 0).refusal(plan)
        if refusal:
            raise RuntimeFailure(refusal)
        spec = from_plan(plan, self.agent_folders)
        with translate(self.base_url):
            return self._start(spec, log)

    def _start(self, spec: WorkspaceSpec, log: LogSink) -> Observation:
        timings: dict[str, float] = {}
        mark = time.perf_counter()

        def lap(step: str) -> None:
            nonlocal mark
            now = time.perf_counter()
            timings[step] = round(timings.get(step, 0.0) + now - mark, 4)
            mark = now

        name = naming.container_name(spec.workspace_id)
        volume = naming.volume_name(spec.workspace_id)
        if spec.egress == Egress.ALL and self.plugs is not None:
            spec = dataclasses.replace(spec, bridged=True, dns=bridge.nameservers())
        wanted = None if spec.bridged else network_class(spec.egress)
        # The network is independent of the volume, the image and the container lookup, and is the slow part
        # of a cold start (the engine makes networks one at a time): it is made on a thread of its own while
        # this one does the rest, and waited for only when the container needs it. Egress "none" has none: a
        # container with loopback only starts faster than one on any bridge (no veth, no firewall rules, no
        # embedded DNS resolver) and has nothing to move laterally with.
        networking: Future[tuple[tuple[str | None, str | None], float]]
        if spec.bridged:

            def shared() -> tuple[None, None]:
                self._ensure_bridge(log)  # made once per deployment, looked up once per process
                return None, None

            networking = self._networking.submit(_timed, shared)
        elif wanted is None:
            networking = Future()
            networking.set_result(((None, None), 0.0))
        else:
            networking = self._networking.submit(
                _timed,
                lambda: self._ensure_network(spec.workspace_id, internal=wanted == "internal", log=log),
            )
        try:
            limit, volume_labels = disks.home_volume(
                self.client,
                self.disks,
                spec,
                volume,
                log,
                labels=naming.owned_labels(spec.workspace_id, self._owner()),
            )
            # An existing volume keeps its labels; one made before deployment labels stays unlabelled (and so
            # is never listed as an orphan), since its home cannot be moved to a new volume here.
            self._claim(volume_labels, f"Volume {volume}")
            for extra in spec.volumes:
                # Created if missing (the engine returns an existing one as it is), claimed like the home.
                self.client.volumes.create(
                    extra.name, labels=naming.owned_labels(spec.workspace_id, self._owner())
                )
                self._claim(self.client.api.inspect_volume(extra.name).get("Labels"), f"Volume {extra.name}")
            if limit is not None:
                # The agent reports home usage against it; in the config hash, so a new limit means a new
                # container.
                spec = dataclasses.replace(spec, env={**spec.env, DISK_LIMIT_VARIABLE: str(limit)})
            lap("volume")
            image_id = self._image_id(spec.image)
            nano_cpus = self._nano_cpus(spec, log)
            config_hash = containers.config_hash(spec, image_id, nano_cpus)
            container = self._get_container(name)
            if container is not None:
                self._claim(container.labels, f"Container {name}")
                state = container.attrs["State"]["Status"]
                changed = container.labels.get(naming.LABEL_CONFIG) != config_hash
                # Made before deployment labels: recreated once, so that it is listed as this deployment's.
                unlabelled = naming.LABEL_DEPLOYMENT not in container.labels
                if changed or unlabelled or state in ("dead", "removing"):
                    why = "its configuration changed" if changed else f"it is {state}"
                    log(f"Removing container {name}: {'it has no deployment' if unlabelled else why}")
                    container.remove(force=True, v=True)
                    container = None
                    if wanted is None:
                        # Its egress became "none" (or it moved to the deployment bridge): the network it was
                        # on has nothing left to carry.
                        self._remove_network_of(spec.workspace_id, log)
            lap("inspect")
        except BaseException:
            # Never leave the network's thread making things behind a build that has failed already.
            _settle(networking)
            raise
        (network, network_id), timings["network"] = networking.result()
        lap("network.wait")
        if spec.egress == Egress.ALLOWLIST:
            assert network_id is not None  # an allowlist's class is "internal"
            # The proxy's address is not in the configuration hash: it changes only with the network, and a
            # container on a replaced network is made afresh below anyway.
            spec = self._open_egress(spec, network_id, log)
            lap("network.egress")
        attached = (
            states.network_id(container.attrs, network)
            if container is not None and network is not None
            else None
        )
        if container is not None and attached not in (None, network_id):
            # Its network was removed while it was stopped; the engine cannot start it on the new one. (A
            # container that never ran has no network id yet and joins by name.)
            log(f"Removing container {name}: its network was replaced")
            container.remove(force=True, v=True)
            container = None
        if container is None:
            container = self._create_container(spec, network, volume, image_id, nano_cpus, config_hash, log)
            lap("create")
        state = container.attrs["State"]["Status"]
        if state == "paused":
            container.unpause()
        elif state != "running":
            self._start_and_wait(container, spec, log)
        else:
            log(f"Container {name} is already running")
            pid = int(container.attrs["State"]["Pid"])
            if spec.bridged and not bridge.routed(pid):
                # The server stopped between the container's start and the end of its plug; its setup step
                # waits for the interface. Whatever the plug left goes, and it is plugged in afresh.
                assert self.plugs is not None
                self.plugs.release(spec.workspace_id)
                self._plug(container.id, spec.workspace_id, pid, log)
        lap("start")
        observation = self._observe(spec.workspace_id)
        return dataclasses.replace(observation, timings=timings)

    def _ensure_bridge(self, log: LogSink) -> bridge.Bridge:
        """The deployment bridge's network, made on the first start that needs it, and again after a prune
        (or `docker network prune`) removed it: a bridge whose device is gone is looked up afresh."""
        with self._bridge_lock:
            if self._bridge is None or not Path(f"/sys/class/net/{self._bridge.device}").exists():
                self._bridge = self._find_or_make_bridge(log)
            return self._bridge

    def _find_or_make_bridge(self, log: LogSink) -> bridge.Bridge:
        name = naming.bridge_network_name(self._owner())
        found = [n for n in self.client.api.networks(filters={"name": name}) if n["Name"] == name]
        if not found:
            log(f"Creating network {name} (the deployment bridge)")
            labels = {
                naming.LABEL_MANAGED: "true",
                naming.LABEL_DEPLOYMENT: self._owner(),
                naming.LABEL_ROLE: bridge.ROLE,
            }

            def create(subnet: str | None) -> None:
                self._create_network(name, labels, subnet, options=bridge.OPTIONS)

            try:
                if self.subnets is None:
                    create(None)
                else:
                    # A block of the workspace pool big enough for a host's workspaces (a /22 of a /16).
                    pool = self.subnets.pool
                    prefix = min(max(22, pool.prefixlen + 1), pool.max_prefixlen - 2)
                    SubnetPool(str(pool), prefix).create_in_pool(self.client, name, create)
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: another process made it first
                    raise
            found = [n for n in self.client.api.networks(filters={"name": name}) if n["Name"] == name]
        if not found:
            raise RuntimeFailure(f"The deployment bridge {name} went away while it was being made.")
        network = self.client.api.inspect_network(found[0]["Id"])
        self._claim(network.get("Labels"), f"Network {name}")
        config = ((network.get("IPAM") or {}).get("Config") or [{}])[0]
        subnet = ipaddress.IPv4Network(config["Subnet"])
        gateway = ipaddress.IPv4Address((config.get("Gateway") or str(next(subnet.hosts()))).split("/")[0])
        device = naming.bridge_name(str(network["Id"]))
        if not Path(f"/sys/class/net/{device}").exists():
            raise RuntimeFailure(
                f"The deployment bridge {device} is not in this server's network namespace.",
                detail="Run the server in the engine's network namespace, or with --workspace-bridge own.",
            )
        self._guard().isolate(str(network["Id"]), naming.BRIDGE_WORKSPACE, log)
        return bridge.Bridge(str(network["Id"]), device, subnet, gateway)

    def _plug(self, container_id: str, workspace_id: str, pid: int, log: LogSink) -> None:
        assert self.plugs is not None
        shared = self._ensure_bridge(log)
        address = self.plugs.attach(shared, workspace_id, container_id, pid)
        log(f"Plugged into the deployment bridge at {address}")

    def _address(self, workspace_id: str) -> str | None:
        """The address of a container on the deployment bridge (the engine does not know it)."""
        if self.plugs is None:
            return None
        try:
            # Running bridged containers mean the bridge exists: this finds it (once per process).
            shared = self._ensure_bridge(lambda line: None)
        except RuntimeFailure as exc:
            _log.warning("cannot find the deployment bridge", error=exc.message)
            return None
        return self.plugs.address_of(workspace_id, shared)

    def _open_egress(self, spec: WorkspaceSpec, network_id: str, log: LogSink) -> WorkspaceSpec:
        """Serve the workspace from the egress proxy on its network's gateway, and point it there."""
        if self.egress is None:
            raise RuntimeFailure("This runtime has no egress proxy, so it cannot enforce egress 'allowlist'.")
        config = (self.client.api.inspect_network(network_id).get("IPAM") or {}).get("Config") or [{}]
        subnet = ipaddress.IPv4Network(config[0]["Subnet"])
        # Docker gives a bridge the subnet's first address unless told otherwise.
        gateway = config[0].get("Gateway") or str(next(subnet.hosts()))
        gateway = gateway.split("/")[0]
        self.egress.open(spec.workspace_id, address=gateway, subnet=str(subnet), allow=spec.egress_allow)
        self._open_gateway(network_id, spec.workspace_id, gateway, str(subnet), log)
        direct = self._direct_networks(spec.egress_allow, log)
        if direct:
            self._guard().forward(network_id, spec.workspace_id, str(subnet), direct, log=log)
        log(
            f"Egress through the proxy at {gateway}:{self.egress.proxy_port} ({', '.join(spec.egress_allow)})"
        )
        return dataclasses.replace(
            spec, env={**spec.env, **proxy_env(gateway, self.egress.proxy_port)}, dns=(gateway,)
        )

    def _open_gateway(
        self, network_id: str, workspace_id: str, gateway: str, subnet: str, log: LogSink
    ) -> None:
        """Open the proxy's ports on the gateway to the network, and redirect its other TCP connections there."""
        assert self.egress is not None
        guard = self._guard()
        guard.open(
            network_id,
            workspace_id,
            gateway,
            tcp=(self.egress.proxy_port, self.egress.intercept_port),
            udp=(self.egress.dns_port,),
            log=log,
        )
        guard.intercept(network_id, workspace_id, subnet, self.egress.intercept_port, log=log)

    def _direct_networks(self, allow: tuple[str, ...], log: LogSink) -> list[str]:
        """The allow-list's CIDRs (without a port) that the workspace may reach without the proxy; never one that
        overlaps the workspace subnets, which would open a way to other workspaces."""
        pool = self.subnets.pool if self.subnets is not None else None
        direct = []
        for entry in parse_entries(list(allow)):
            if entry.kind != EntryKind.ADDRESS or entry.port is not None:
                continue
            if pool is not None and entry.network.overlaps(pool):
                log(f"{entry.value} overlaps the workspace networks: reachable through the proxy only")
                continue
            direct.append(entry.value)
        return direct

    def _claim(self, labels: dict[str, str] | None, what: str) -> None:
        """Refuse to use an object another deployment made (a shared database copied to a second server)."""
        if not self._mine(labels):
            raise ContainerConflict(
                f"{what} belongs to another Dockyard deployment on this engine.",
                detail=f"deployment {(labels or {}).get(naming.LABEL_DEPLOYMENT)}, this one {self.deployment}",
            )

    def _image_id(self, image: str) -> str:
        try:
            return str(self.client.images.get(image).id)
        except docker.errors.ImageNotFound as exc:
            raise builds.missing(
                image, "the engine does not have it (ensure_image pulls or builds it)"
            ) from exc

    def _nano_cpus(self, spec: WorkspaceSpec, log: LogSink) -> int:
        # The engine refuses a CPU limit above the host's count; cap it there rather than fail the start.
        cpus = min(spec.cpu, self.capacity().cpus)
        if cpus < spec.cpu:
            log(f"The template asks for {spec.cpu:g} CPUs; this host has {cpus:g}, so the limit is {cpus:g}")
        return int(cpus * 1e9)

    def _get_container(self, name: str) -> Any:
        try:
            return self.client.containers.get(name)
        except docker.errors.NotFound:
            return None

    def prepare_network(self, workspace_id: str, network_class: str, log: LogSink) -> None:
        with translate(self.base_url):
            self._ensure_network(workspace_id, internal=network_class == "internal", log=log)

    def _ensure_network(self, workspace_id: str, *, internal: bool, log: LogSink) -> tuple[str, str]:
        """Return the workspace network's name and id, creating it if needed."""
        name = naming.network_name(workspace_id)
        # The name filter matches substrings; only the exact name is this workspace's network.
        existing = [n for n in self.client.networks.list(names=[name]) if n.name == name]
        for network in existing:
            labels = network.attrs.get("Labels")
            self._claim(labels, f"Network {name}")
            if bool(network.attrs.get("Internal")) == internal and naming.LABEL_DEPLOYMENT in (labels or {}):
                self._guard().isolate(str(network.id), workspace_id, log)
                return name, str(network.id)
            changed = (
                "egress changed" if naming.LABEL_DEPLOYMENT in (labels or {}) else "it has no deployment"
            )
            log(f"Recreating network {name}: {changed}")
            self._remove_network(network)
        log(f"Creating network {name} ({'internal' if internal else 'with egress'})")

        created: list[str] = []

        def create(subnet: str | None) -> None:
            labels = naming.owned_labels(workspace_id, self._owner())
            created.append(self._create_network(name, labels, subnet, internal=internal))

        try:
            if self.subnets is None:
                create(None)
            else:
                self.subnets.create_in_pool(self.client, workspace_id, create)
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # another start of this workspace made it first; use that one
                network_id = str(self.client.networks.get(name).id)
                self._guard().isolate(network_id, workspace_id, log)
                return name, network_id
            if "non-overlapping" in explanation(exc):
                raise RuntimeFailure(
                    "The Docker engine has no address pool left for another workspace network (its default "
                    "pools hold about 30 networks). Give the runtime a subnet pool, or set "
                    "default-address-pools in the engine's daemon.json.",
                    detail=explanation(exc),
                ) from exc
            raise
        self._guard().isolate(created[0], workspace_id, log, fresh=True)
        return name, created[0]

    def _create_network(
        self,
        name: str,
        labels: dict[str, str],
        subnet: str | None,
        *,
        internal: bool = False,
        options: dict[str, str] | None = None,
    ) -> str:
        """Make a bridge network (in `subnet`, or one of the engine's pools); returns its id."""
        ipam = (
            docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet)]) if subnet else None
        )
        # The low-level call: the high-level one inspects the network it made, one more engine call.
        with self._network_gate:
            network = self.client.api.create_network(
                name,
                driver="bridge",
                internal=internal,
                check_duplicate=True,
                labels=labels,
                ipam=ipam,
                options=options,
            )
        return str(network["Id"])

    def _create_container(
        self,
        spec: WorkspaceSpec,
        network: str | None,
        volume: str,
        image_id: str,
        nano_cpus: int,
        config_hash: str,
        log: LogSink,
    ) -> Any:
        name = naming.container_name(spec.workspace_id)
        log(f"Creating container {name} from {spec.image}")
        args = containers.create_args(
            spec,
            network=network,
            volume=volume,
            image_id=image_id,
            nano_cpus=nano_cpus,
            config_hash=config_hash,
        )
        args["labels"] = {**args["labels"], naming.LABEL_DEPLOYMENT: self._owner()}
        # The low-level create, as `containers.create` makes it, without the inspect that call adds: what the
        # start needs of a container made just now (its name, its state) is known without asking the engine.
        made = self.client.api.create_container(
            **docker.models.containers._create_container_args({**args, "version": self.client.api._version})
        )
        container = self.client.containers.prepare_model(
            {
                "Id": made["Id"],
                "Name": f"/{name}",
                "State": {"Status": "created"},
                "Config": {"Labels": args["labels"]},
            }
        )
        files = bootstrap.archive(spec)
        if files is not None:
            container.put_archive("/", files)
        return container

    def _start_and_wait(self, container: Any, spec: WorkspaceSpec, log: LogSink) -> None:
        """Start the container and return once its setup step has handed over to the workload."""
        finished_at = states.timestamp(container.attrs["State"].get("FinishedAt"))
        log(f"Starting container {container.name}")
        try:
            container.start()
        except docker.errors.APIError as exc:
            # The engine's own refusals ("OCI runtime create failed: …") are the workspace's problem to show.
            if not exc.is_client_error():
                raise
            raise RuntimeFailure(f"Starting container {container.name} failed: {explanation(exc)}") from exc
        if spec.bridged:
            pid = int(self.client.api.inspect_container(container.id)["State"]["Pid"])
            try:
                self._plug(container.id, spec.workspace_id, pid, log)
            except RuntimeFailure:
                # Its setup step would wait for the interface; the start has failed already.
                with contextlib.suppress(docker.errors.APIError):
                    container.kill()
                raise
        # Logs of earlier runs stay; only lines after the previous run ended belong to this start. Following
        # the log stream sees the ready line the moment it is written; polling would add its interval to
        # every start and load the engine with requests when many workspaces start at once.
        stream = containers.follow_logs(self.client.api, container.id, since=finished_at or None)
        timer = threading.Timer(self.ready_timeout, stream.close)
        timer.start()
        output = ""
        # When the timer closes the stream the read fails with OSError/ValueError; either way the stream has
        # ended without the ready line, and the container's state below says whether setup failed or hung.
        try:
            with contextlib.suppress(OSError, ValueError):
                for chunk in stream:
                    output += chunk.decode("utf-8", "replace")
                    if bootstrap.READY in output:
                        return
        finally:
            timer.cancel()
            stream.close()
        container.reload()
        state = container.attrs["State"]
        if state["Status"] != "running":
            raise containers.setup_failure(spec, state.get("ExitCode"), output)
        raise RuntimeFailure(
            f"The setup step of {container.name} did not finish within {self.ready_timeout:g} s.",
            detail=output[-4000:],
        )

    def stop(self, workspace_id: str, log: LogSink) -> None:
        with translate(self.base_url):
            name = naming.container_name(workspace_id)
            container = self._get_container(name)
            if container is None:
                log(f"Container {name} does not exist; nothing to stop")
                return
            if container.attrs["State"]["Status"] not in ("running", "paused", "restarting"):
                log(f"Container {name} is not running")
                return
            log(f"Stopping container {name}")
            try:
                container.stop(timeout=self.stop_timeout)
            except docker.errors.NotFound:
                log(f"Container {name} went away while stopping")

    def _remove_extra_volumes(self, workspace_id: str, log: LogSink) -> None:
        """The workspace's dev container volumes: this deployment's, labelled with the workspace."""
        selector = {
            "label": [
                f"{naming.LABEL_WORKSPACE}={workspace_id}",
                f"{naming.LABEL_DEPLOYMENT}={self._owner()}",
            ]
        }
        prefix = naming.extra_volume_name(workspace_id, "")
        for found in self.client.api.volumes(filters=selector).get("Volumes") or []:
            if found["Name"].startswith(prefix):
                self.client.api.remove_volume(found["Name"], force=True)
                log(f"Removed volume {found['Name']}")

    def delete(self, workspace_id: str, log: LogSink) -> None:
        with translate(self.base_url):
            name = naming.container_name(workspace_id)
            container = self._get_container(name)
            if container is not None:
                self._claim(container.labels, f"Container {name}")
                log(f"Removing container {name}")
                self._remove_container(container)
            volume_name = naming.volume_name(workspace_id)
            try:
                volume = self.client.volumes.get(volume_name)
                self._claim(volume.attrs.get("Labels"), f"Volume {volume_name}")
                volume.remove(force=True)
                log(f"Removed volume {volume_name}")
            except docker.errors.NotFound:
                pass
            self._remove_extra_volumes(workspace_id, log)
            if self.disks is not None:
                self.disks.remove(workspace_id, log)
            if self.egress is not None:
                self.egress.close(workspace_id)
            self._remove_network_of(workspace_id, log)

    def _remove_network_of(self, workspace_id: str, log: LogSink) -> None:
        network_name = naming.network_name(workspace_id)
        for network in self.client.networks.list(names=[network_name]):
            if network.name == network_name:
                self._claim(network.attrs.get("Labels"), f"Network {network_name}")
                self._remove_network(network)
                log(f"Removed network {network_name}")

    def _remove_container(self, container: Any) -> None:
        try:
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            # "removal already in progress": another delete got there first.
            if exc.status_code != 409:
                raise

    def _remove_network(self, network: Any) -> None:
        try:
            network.remove()
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if "active endpoints" in explanation(exc):
                raise ContainerConflict(
                    f"Network {network.name} is still in use by a container.", detail=explanation(exc)
                ) from exc
            raise
        self._guard().release(str(network.id))

    # -- observing --------------------------------------------------------------------------------------

    def observe(self, workspace_id: str) -> Observation:
        with translate(self.base_url):
            return self._observe(workspace_id)

    def _observe(self, workspace_id: str) -> Observation:
        try:
            attrs = self.client.api.inspect_container(naming.container_name(workspace_id))
        except docker.errors.NotFound:
            return Observation(workspace_id, ContainerState.MISSING, detail="no container")
        observation = states.from_inspect(workspace_id, attrs)
        if _bridged(attrs.get("Config", {}).get("Labels")) and observation.state == ContainerState.RUNNING:
            observation = dataclasses.replace(observation, address=self._address(workspace_id))
        return observation

    def agent_addresses(self, workspace_id: str) -> frozenset[str] | None:
        # The container's address on its own workspace network: packets it sends to the control plane (on any
        # host address, through the bridge) carry it, and no other workspace can use it.
        observation = self.observe(workspace_id)
        if observation.state != ContainerState.RUNNING or not observation.address:
            return frozenset()
        return frozenset({observation.address})

    def observe_all(self) -> dict[str, Observation]:
        """Observations from one list call.

        The list shows neither the OOM flag nor the exit code's meaning, so a container that exited with a
        code other than 143 (a normal stop) is inspected as well; running and stopped ones never are.
        """
        with translate(self.base_url):
            resync = self._guard().resync_due()
            if resync:
                # Puts back rules a firewall reload or a reboot took away (the server's reconciler calls this).
                self._guard().resync(self._networks())
            if self.disks is not None and not self._disks_mounted:
                # The first pass after the server starts: mounts are gone after a host reboot.
                self.disks.mount_all(_warn)
                self._disks_mounted = True
            summaries = self.client.api.containers(all=True, filters={"label": naming.LABEL_WORKSPACE})
            result: dict[str, Observation] = {}
            fenced: list[EgressRoute] = []
            for summary in summaries:
                # Containers made before deployment labels are observed too: a running one stays running
                # until its next start, and only this deployment's database knows its workspace id.
                if not self._mine(summary["Labels"]):
                    continue
                workspace_id = summary["Labels"][naming.LABEL_WORKSPACE]
                state = summary.get("State", "")
                match = states.EXITED_STATUS.match(summary.get("Status", ""))
                if state == "exited" and not (match and int(match.group(1)) == 143):
                    try:
                        attrs = self.client.api.inspect_container(summary["Id"])
                    except docker.errors.NotFound:
                        continue
                    result[workspace_id] = states.from_inspect(workspace_id, attrs)
                    continue
                networks = (summary.get("NetworkSettings") or {}).get("Networks") or {}
                address = states.network_address(networks, naming.network_name(workspace_id))
                if state == "running" and _bridged(summary["Labels"]):
                    address = self._address(workspace_id)
                route = _egress_route(summary)
                if state == "running" and route is not None:
                    self._serve_again(route)
                    fenced.append(route)
                result[workspace_id] = states.from_state(
                    workspace_id, state, 143 if match else None, False, "", address
                )
            if resync and fenced:
                self._reopen_egress(fenced)
            return result

    def _serve_again(self, route: EgressRoute) -> None:
        """Serve a running allowlist workspace this process does not serve (the server restarted)."""
        if self.egress is None or route.workspace_id in self.egress.serving():
            return
        try:
            self.egress.open(
                route.workspace_id, address=route.gateway, subnet=route.subnet, allow=route.allow
            )
        except RuntimeFailure as exc:
            # Once per workspace: each reconcile pass would say it again.
            if route.workspace_id not in self._egress_refused:
                self._egress_refused.add(route.workspace_id)
                _log.warning(
                    "cannot serve a workspace's egress", workspace=route.workspace_id, error=exc.message
                )
            return
        self._open_gateway(route.network_id, route.workspace_id, route.gateway, route.subnet, _warn)

    def _reopen_egress(self, routes: list[EgressRoute]) -> None:
        """Put back the egress rules of running allowlist workspaces that a firewall reload took away. Without
        them such a workspace is cut off, not let out: its network is internal, so the engine drops what the
        REDIRECT no longer sends to the proxy, and the REJECT refuses the proxy's ports."""
        if self.egress is None:
            return
        # A failing iptables costs this repair, never the reconciler's observation it runs inside.
        try:
            unserved = self._guard().unserved({naming.bridge_name(route.network_id) for route in routes})
        except RuntimeFailure as exc:
            _log.warning("cannot check the egress rules", error=exc.message)
            return
        for route in routes:
            if naming.bridge_name(route.network_id) not in unserved:
                continue
            try:
                self._open_gateway(route.network_id, route.workspace_id, route.gateway, route.subnet, _warn)
                direct = self._direct_networks(route.allow, _warn)
                if direct:
                    self._guard().forward(
                        route.network_id, route.workspace_id, route.subnet, direct, log=_warn
                    )
            except RuntimeFailure as exc:
                _log.warning(
                    "cannot repair the egress rules", workspace=route.workspace_id, error=exc.message
                )
                continue
            _log.warning("egress rules repaired", workspace=route.workspace_id)

    def managed_resources(self) -> list[ManagedResource]:
        """This deployment's objects; those without a deployment label belong to none and are never listed."""
        selector = {"label": [f"{naming.LABEL_MANAGED}=true", f"{naming.LABEL_DEPLOYMENT}={self._owner()}"]}
        with translate(self.base_url):
            found = self.client.api.containers(all=True, filters=selector)
            resources = [
                ManagedResource("container", c["Names"][0].lstrip("/"), _workspace_of(c.get("Labels")))
                for c in found
            ]
            # The deployment bridge belongs to no workspace: it is left over (and pruned) only once no
            # container of the deployment is made for it.
            bridge_used = any(_bridged(c.get("Labels")) for c in found)
            volumes = self.client.api.volumes(filters=selector).get("Volumes") or []
            resources += [
                ManagedResource("volume", v["Name"], _workspace_of(v.get("Labels"))) for v in volumes
            ]
            resources += [
                ManagedResource("network", n["Name"], _workspace_of(n.get("Labels")))
                for n in self.client.api.networks(filters=selector)
                if not (bridge_used and (n.get("Labels") or {}).get(naming.LABEL_ROLE) == bridge.ROLE)
            ]
        return resources

    def remove_resource(self, resource: ManagedResource) -> None:
        # Looked up again by name: only an object that still carries this deployment's label is removed.
        with translate(self.base_url):
            try:
                if resource.kind == "container":
                    container = self.client.containers.get(resource.name)
                    if self._mine(container.labels, legacy=False):
                        self._remove_container(container)
                elif resource.kind == "volume":
                    volume = self.client.volumes.get(resource.name)
                    if self._mine(volume.attrs.get("Labels"), legacy=False):
                        volume.remove(force=True)
                        if self.disks is not None and resource.workspace_id:
                            self.disks.remove(resource.workspace_id, lambda line: None)
                elif resource.kind == "network":
                    for network in self.client.networks.list(names=[resource.name]):
                        if network.name == resource.name and self._mine(
                            network.attrs.get("Labels"), legacy=False
                        ):
                            self._remove_network(network)
                else:
                    raise ValueError(f"unknown resource kind {resource.kind!r}")
            except docker.errors.NotFound:
                pass

    # -- host isolation ---------------------------------------------------------------------------------

    def host_isolation(self) -> HostIsolation:
        with translate(self.base_url):
            return self._guard().report(self._networks())[0]

    def _guard(self) -> BridgeIsolation:
        self._owner()
        assert self.isolation is not None
        return self.isolation

    def _networks(self) -> Networks:
        """This deployment's bridge networks: bridge -> (name, workspace id)."""
        selector = {"label": f"{naming.LABEL_DEPLOYMENT}={self._owner()}", "driver": "bridge"}
        return {
            naming.bridge_name(n["Id"]): (
                n["Name"],
                _workspace_of(n.get("Labels")) or naming.BRIDGE_WORKSPACE,
            )
            for n in self.client.api.networks(filters=selector)
        }

    def repair_host_isolation(self) -> HostIsolation:
        with translate(self.base_url):
            report = self._guard().repair(self._networks())
            selector = {"label": [naming.LABEL_EGRESS_ALLOW, f"{naming.LABEL_DEPLOYMENT}={self._owner()}"]}
            routes = [_egress_route(c) for c in self.client.api.containers(filters=selector)]
            self._reopen_egress([route for route in routes if route is not None])
            return report


def _warn(line: str) -> None:
    """A build log's line said in the server's log, for work done outside any build."""
    _log.warning(line)


@dataclasses.dataclass(frozen=True)
class EgressRoute:
    """Where a running allowlist workspace's egress proxy serves it, read from its container."""

    workspace_id: str
    network_id: str
    gateway: str
    subnet: str
    allow: tuple[str, ...]


def _egress_route(summary: dict[str, Any]) -> EgressRoute | None:
    """From a container's summary in the engine's list; None unless it is an allowlist workspace's."""
    labels = summary.get("Labels") or {}
    workspace_id = labels.get(naming.LABEL_WORKSPACE)
    if naming.LABEL_EGRESS_ALLOW not in labels or not workspace_id:
        return None
    networks = (summary.get("NetworkSettings") or {}).get("Networks") or {}
    attached = networks.get(naming.network_name(workspace_id)) or {}
    if not attached.get("Gateway") or not attached.get("IPAddress"):
        return None
    subnet = ipaddress.IPv4Interface(f"{attached['IPAddress']}/{attached.get('IPPrefixLen') or 32}").network
    return EgressRoute(
        workspace_id,
        str(attached.get("NetworkID", "")),
        attached["Gateway"],
        str(subnet),
        tuple(json.loads(labels[naming.LABEL_EGRESS_ALLOW])),
    )


def proxy_env(address: str, port: int) -> dict[str, str]:
    """What makes ordinary tools (curl, pip, git, npm, Python's urllib) use the egress proxy."""
    url = f"http://{address}:{port}"
    no_proxy = "localhost,127.0.0.1"
    return {
        "HTTP_PROXY": url,
        "HTTPS_PROXY": url,
        "http_proxy": url,
        "https_proxy": url,
        "NO_PROXY": no_proxy,
        "no_proxy": no_proxy,
    }


def _timed(work: Callable[[], tuple[str | None, str | None]]) -> tuple[tuple[str | None, str | None], float]:
    """What `work` returns, and the seconds it took (the build's `container.network` timing)."""
    started = time.perf_counter()
    value = work()
    return value, round(time.perf_counter() - started, 4)


def _settle(future: Future[Any]) -> None:
    """Wait for `future` to end without raising: its failure, if any, is not the one being raised."""
    futures.wait([future])


def _bridged(labels: dict[str, str] | None) -> bool:
    return (labels or {}).get(naming.LABEL_NETWORK) == naming.NETWORK_BRIDGED


def _workspace_of(labels: dict[str, str] | None) -> str:
    return (labels or {}).get(naming.LABEL_WORKSPACE, "")


def _all_logs(container: Any) -> str:
    return bytes(container.logs()).decode("utf-8", "replace")
