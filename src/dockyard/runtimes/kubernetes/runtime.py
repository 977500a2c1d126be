"""`KubernetesRuntime`: workspaces as pods in one namespace (objects: see manifests.py).

Lifecycle: a start makes (or keeps) the home claim, the network policy and the pod, then waits until the pod
runs or the cluster says why it cannot (unschedulable, image pull errors, a failing container) and fails the
build with that reason. "Runs" is the kubelet's report (phase Running), or, sooner, the agent's connection from
inside the pod (`started`): the kubelet reports a started container only at its next once-a-second relist. A stop deletes the pod and keeps the claim; the next start makes a new pod on the same
claim. A delete removes everything labelled with the workspace.

Observation is by list+watch: one thread keeps every pod of this deployment in memory, so `observe_all` costs
no API call and a pod that is evicted, OOM-killed or deleted by someone else shows its reason at the next
reconcile pass. Starts wait on the same stream instead of polling.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import kubernetes.client
import kubernetes.config
import kubernetes.watch
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from dockyard import logs
from dockyard.runtimes.base import (
    ContainerState,
    EgressProxy,
    HostCapacity,
    HostIsolation,
    ImageBuildFailed,
    ImageSpec,
    LogSink,
    ManagedResource,
    Observation,
    RuntimeFailure,
    RuntimeUnavailable,
)
from dockyard.runtimes.kubernetes import cluster, home, inventory, manifests, objects, pods, states
from dockyard.runtimes.kubernetes.delivery import AgentDelivery
from dockyard.runtimes.kubernetes.errors import translate
from dockyard.runtimes.kubernetes.options import LOCAL_STORAGE_CLASS, KubernetesOptions
from dockyard.runtimes.kubernetes.spec import AgentFolders, WorkspaceSpec, from_plan
from dockyard.runtimes.kubernetes.watch import PodCache, watch_pods
from dockyard.runtimes.plan import Capabilities, Egress, LinkKind, WorkspacePlan

_log = logs.get("dockyard.runtimes.kubernetes")


class KubernetesRuntime:
    """The `Runtime` protocol over the Kubernetes API (the official client)."""

    name = "kubernetes"

    def __init__(self, options: KubernetesOptions, *, deployment: str | None = None) -> None:
        self.options = options
        self.deployment: str | None = None
        self._api: kubernetes.client.ApiClient | None = None
        self._lock = threading.Lock()
        self.cache = PodCache()
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()
        self.agent_folders: AgentFolders | None = None
        self.delivery = AgentDelivery(options)
        self._gpu: bool | None = None
        if deployment is not None:
            self.bind_deployment(deployment)

    # -- connection ---------------------------------------------------------------------------------------

    def bind_deployment(self, deployment: str) -> None:
        if self.deployment is not None and self.deployment != deployment:
            raise ValueError(f"this runtime already serves deployment {self.deployment}, not {deployment}")
        self.deployment = deployment

    def bind_agent(self, program_dir: Path, links_dir: Path) -> None:
        self.agent_folders = AgentFolders(program_dir, links_dir)

    def bind_egress(self, proxy: EgressProxy) -> None:
        # Pods leave the node through the cluster's network, where Dockyard's proxy cannot stand in the way;
        # allow-lists here are network policies over addresses and CIDRs (`capabilities().egress_names` is off).
        pass

    def capabilities(self) -> Capabilities:
        # The network link's agent and token travel by ConfigMap and Secret, so any node will do; the socket
        # link needs host folders, only right where the pods run on the server's own host.
        links: frozenset[LinkKind] = frozenset()
        if self.agent_folders is not None:
            links = frozenset(
                {LinkKind.NETWORK} | ({LinkKind.UNIX_SOCKET} if self.options.host_paths else set())
            )
        # Egress `none` and `allowlist` (CIDRs) are NetworkPolicies, which only the cluster's network plugin
        # enforces; without the operator's word that it does, the runtime offers only what it can keep.
        enforced = self.options.policies_enforced
        return Capabilities(
            agent_links=links,
            egress=frozenset(Egress) if enforced else frozenset({Egress.ALL}),
            gpu=self._has_gpu(),
            # A claim's size bounds the home only on storage that enforces it; the local class does not.
            disk_quota=self.options.storage_class != LOCAL_STORAGE_CLASS,
            resume_keeps_root=False,
            host_isolation=enforced,
            prepared_networks=False,
        )

    def _has_gpu(self) -> bool:
        # GPUs are an extended resource a device plugin advertises on nodes; without one a pod asking for a GPU
        # never schedules. Asked once: listing nodes needs a cluster-wide grant the runtime may lack (then no).
        if self._gpu is None:
            try:
                self._gpu = cluster.has_gpu(self.core)
            except (ApiException, urllib3.exceptions.HTTPError, OSError):
                return False
        return self._gpu

    def _owner(self) -> str:
        if self.deployment is None:
            raise RuntimeError(
                "KubernetesRuntime.bind_deployment() must be called before it makes or lists objects"
            )
        return self.deployment

    @property
    def address(self) -> str:
        return (
            self._api.configuration.host
            if self._api is not None
            else (self.options.kubeconfig or "in-cluster")
        )

    @property
    def api(self) -> kubernetes.client.ApiClient:
        with self._lock:
            if self._api is None:
                with translate(self.options.kubeconfig or "in-cluster configuration"):
                    self._api = cluster.client(self.options.kubeconfig)
            return self._api

    @property
    def core(self) -> kubernetes.client.CoreV1Api:
        return kubernetes.client.CoreV1Api(self.api)

    @property
    def networking(self) -> kubernetes.client.NetworkingV1Api:
        return kubernetes.client.NetworkingV1Api(self.api)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            if self._api is not None:
                self._api.close()
                self._api = None

    def ping(self) -> None:
        """Raise RuntimeUnavailable naming what is wrong: the API, the namespace, or a permission RBAC denies."""
        api = self.api
        with translate(self.address):
            cluster.check(api, self.options, address=self.address)

    def capacity(self) -> HostCapacity:
        with translate(self.address):
            return cluster.capacity(self.core)

    # -- images -------------------------------------------------------------------------------------------

    def ensure_image(self, spec: ImageSpec, log: LogSink) -> str:
        if spec.dockerfile:
            raise ImageBuildFailed(
                "The Kubernetes runtime does not build Dockerfiles: the cluster pulls images from a registry.",
                detail="build and push the image, then name it with `image:` in the template",
            )
        if not spec.image:
            raise ValueError(
                f"image spec for template {spec.template!r} names neither an image nor a Dockerfile"
            )
        # The kubelet pulls it; a pull that fails fails the start with the kubelet's reason.
        return spec.image

    # -- workspaces ---------------------------------------------------------------------------------------

    def start(
        self, plan: WorkspacePlan, log: LogSink, *, started: threading.Event | None = None
    ) -> Observation:
        refusal = self.capabilities().refusal(plan)
        if refusal:
            raise RuntimeFailure(refusal)
        spec = from_plan(plan, self.agent_folders)
        with translate(self.address):
            return self._start(spec, log, started=started)

    def _start(self, spec: WorkspaceSpec, log: LogSink, *, started: threading.Event | None) -> Observation:
        timings: dict[str, float] = {}
        mark = time.perf_counter()

        def lap(step: str) -> None:
            nonlocal mark
            now = time.perf_counter()
            timings[step] = round(now - mark, 4)
            mark = now

        self._ensure_watch()
        if spec.files:
            log("The Kubernetes runtime does not place files in the workspace; ignoring them")
        if spec.sudo:
            log("sudo is not available on Kubernetes: the pod runs without privilege escalation")
        owner = self._owner()
        namespace = self.options.namespace
        # The kubelet checks a hostPath as it is: a symlinked data dir is given by its real path.
        spec = dataclasses.replace(
            spec, mounts=tuple(dataclasses.replace(m, source=os.path.realpath(m.source)) for m in spec.mounts)
        )
        # The home, the agent's objects, the network policy and the look at a pod left from before do not depend
        # on each other: done at once, the start waits for the slowest of them rather than for their sum.
        try:
            policy = manifests.network_policy(
                spec,
                self.options,
                deployment=owner,
                allow=spec.egress_allow,
                cluster_cidrs=self.options.cluster_cidrs,
            )
        except ValueError as exc:
            raise RuntimeFailure(str(exc)) from exc
        core = self.core
        agent_made = (
            _helpers().submit(
                self.delivery.ensure, core, spec, folders=self.agent_folders, deployment=owner, log=log
            )
            if spec.agent_projected and self.agent_folders is not None
            else None
        )
        policy_made = _helpers().submit(
            objects.apply_policy, self.networking, policy, namespace=namespace, deployment=owner, log=log
        )
        current_read = _helpers().submit(
            pods.read, core, manifests.pod_name(spec.workspace_id), namespace=namespace
        )
        fresh_home = home.ensure(core, spec, self.options, deployment=owner, log=log)
        lap("volume")
        agent = agent_made.result() if agent_made is not None else None
        policy_made.result()
        lap("agent+network")
        try:
            wanted = manifests.pod(
                spec,
                self.options,
                deployment=owner,
                overlay=spec.kubernetes_pod,
                agent_files=agent,
                fresh_home=fresh_home,
            )
        except ValueError as exc:
            raise RuntimeFailure(str(exc)) from exc
        uid = pods.ensure(
            core,
            self.cache,
            spec.workspace_id,
            wanted,
            current_read.result(),
            image=spec.image,
            log=log,
            lap=lap,
        )
        observation = pods.wait_running(
            core,
            self.cache,
            spec.workspace_id,
            uid=uid,
            namespace=namespace,
            timeout=self.options.ready_timeout,
            log=log,
            started=started,
        )
        lap("start")
        return Observation(
            observation.workspace_id,
            observation.state,
            observation.exit_code,
            observation.detail,
            observation.address,
            timings=timings,
        )

    def stop(self, workspace_id: str, log: LogSink) -> None:
        with translate(self.address):
            self._delete_pod(workspace_id, log)

    def _delete_pod(self, workspace_id: str, log: LogSink) -> None:
        pods.delete(self.core, self.cache, workspace_id, namespace=self.options.namespace, log=log)

    def delete(self, workspace_id: str, log: LogSink) -> None:
        with translate(self.address):
            self._delete_pod(workspace_id, log)
            inventory.remove_workspace(self.core, self.networking, self.options, workspace_id, log=log)
            namespace = self.options.namespace
            # Claims and volumes carry protection finalizers and go a moment after the pod: a delete that
            # returns has left nothing labelled with the workspace.
            deadline = time.monotonic() + 60
            while left := [r.name for r in self.managed_resources() if r.workspace_id == workspace_id]:
                if time.monotonic() > deadline:
                    raise RuntimeFailure(f"Still there 60 s after the delete: {', '.join(left)}")
                time.sleep(0.25)
            with self.cache.changed:
                self.cache.gone.pop(workspace_id, None)
                self.cache.expected.discard(workspace_id)
            if self.options.storage_class == LOCAL_STORAGE_CLASS:
                home.remove_local_folder(self.options, manifests.volume_name(namespace, workspace_id))

    def prepare_network(self, workspace_id: str, network_class: str, log: LogSink) -> None:
        """Nothing to make ahead: a network policy costs the API one call at start."""

    # -- observing ----------------------------------------------------------------------------------------

    def _ensure_watch(self) -> None:
        selector = manifests.selector(self._owner())
        core = self.core  # outside the lock: making the client takes it
        with self._lock:
            if self._watcher is None or not self._watcher.is_alive():
                self._watcher = threading.Thread(
                    target=watch_pods,
                    args=(core, self.options.namespace, selector),
                    kwargs={"cache": self.cache, "stop": self._stop},
                    daemon=True,
                    name="dockyard-k8s-watch",
                )
                self._watcher.start()

    def observe(self, workspace_id: str) -> Observation:
        with translate(self.address):
            pod = pods.read(self.core, manifests.pod_name(workspace_id), namespace=self.options.namespace)
            with self.cache.changed:
                gone = self.cache.gone.get(workspace_id, "")
            if (
                pod is None
                and not gone
                and home.exists(self.core, workspace_id, namespace=self.options.namespace)
            ):
                # A stop deletes the pod and keeps the home claim: the workspace is down and still there.
                return Observation(
                    workspace_id, ContainerState.STOPPED, None, "stopped: no pod, the home is kept"
                )
        return states.observe(workspace_id, pod, gone=gone)

    def agent_addresses(self, workspace_id: str) -> frozenset[str] | None:
        # The pod's address: its agent's connections come from it where pods reach the server without NAT
        # (the usual pod network; a server outside the cluster behind NAT cannot check, see KUBERNETES.md).
        with self.cache.changed:
            synced = self.cache.synced
            pod = self.cache.pods.get(workspace_id)
        if not synced:
            with translate(self.address):
                pod = pods.read(self.core, manifests.pod_name(workspace_id), namespace=self.options.namespace)
        if pod is None or pod["metadata"].get("deletionTimestamp"):
            return frozenset()
        status = pod.get("status") or {}
        addresses = {ip["ip"] for ip in status.get("podIPs") or [] if ip.get("ip")}
        if status.get("podIP"):
            addresses.add(status["podIP"])
        return frozenset(addresses)

    def observe_all(self) -> dict[str, Observation]:
        self._ensure_watch()
        with self.cache.changed:
            if not self.cache.synced:
                self.cache.changed.wait(5.0)
            if not self.cache.synced:
                raise RuntimeUnavailable(
                    f"The pod watch at {self.address} is not connected: {self.cache.error or 'starting'}"
                )
            pods = dict(self.cache.pods)
            gone = dict(self.cache.gone)
        result = {wid: states.observe(wid, pod) for wid, pod in pods.items()}
        for workspace_id, reason in gone.items():
            result.setdefault(workspace_id, states.observe(workspace_id, None, gone=reason))
        return result

    def managed_resources(self) -> list[ManagedResource]:
        with translate(self.address):
            return inventory.managed(self.core, self.networking, self.options, deployment=self._owner())

    def remove_resource(self, resource: ManagedResource) -> None:
        remove = inventory.removers(self.core, self.networking, namespace=self.options.namespace)
        if resource.kind not in remove:
            raise ValueError(f"unknown resource kind {resource.kind!r}")
        with translate(self.address):
            # Only what still carries this deployment's label: the listing may be old.
            if resource.name not in {r.name for r in self.managed_resources() if r.kind == resource.kind}:
                return
            objects.deleted(remove[resource.kind], resource.name)
            if resource.kind == "persistentvolume":
                home.remove_local_folder(self.options, resource.name)

    # -- isolation ----------------------------------------------------------------------------------------

    def host_isolation(self) -> HostIsolation:
        # The network policies are the isolation, and only the cluster's network plugin enforces them; Dockyard
        # cannot tell from the API whether it does (the test cluster's does not).
        return HostIsolation(
            enforced=False,
            error="network policies are enforced by the cluster's network plugin, which Dockyard cannot check",
        )

    def repair_host_isolation(self) -> HostIsolation:
        return self.host_isolation()


_HELPERS: ThreadPoolExecutor | None = None
_HELPERS_LOCK = threading.Lock()


def _helpers() -> ThreadPoolExecutor:
    """Threads for the parts of a start that run beside each other (shared: a burst of starts queues here)."""
    global _HELPERS
    with _HELPERS_LOCK:
        if _HELPERS is None:
            _HELPERS = ThreadPoolExecutor(16, thread_name_prefix="dockyard-k8s-start")
        return _HELPERS
