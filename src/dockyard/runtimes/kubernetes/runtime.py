"""`KubernetesRuntime`: workspaces as pods in one namespace (objects: see manifests.py).

Lifecycle: a start makes (or keeps) the home claim, the network policy and the pod, then waits until the pod
runs or the cluster says why it cannot (unschedulable, image pull errors, a failing container) and fails the
build with that reason. A stop deletes the pod and keeps the claim; the next start makes a new pod on the same
claim. A delete removes everything labelled with the workspace.

Observation is by list+watch: one thread keeps every pod of this deployment in memory, so `observe_all` costs
no API call and a pod that is evicted, OOM-killed or deleted by someone else shows its reason at the next
reconcile pass. Starts wait on the same stream instead of polling.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
from dockyard.runtimes.kubernetes import cluster, manifests, states
from dockyard.runtimes.kubernetes.cluster import body
from dockyard.runtimes.kubernetes.errors import translate
from dockyard.runtimes.kubernetes.options import LOCAL_STORAGE_CLASS, KubernetesOptions
from dockyard.runtimes.kubernetes.spec import AgentFolders, WorkspaceSpec, from_plan
from dockyard.runtimes.kubernetes.watch import PodCache, raw, watch_pods
from dockyard.runtimes.plan import TOKEN_NAME, Capabilities, Egress, LinkKind, WorkspacePlan

_log = logs.get("dockyard.runtimes.kubernetes")
# What the runtime must be allowed to do in its namespace; `ping` checks each, so RBAC problems show at start.
CALL_TIMEOUT = 30.0


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
        # The agent ConfigMaps known to exist (one per agent version).
        self._agent_maps: set[str] = set()
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
                nodes = raw(self.core.list_node, _request_timeout=CALL_TIMEOUT)
            except (ApiException, urllib3.exceptions.HTTPError, OSError):
                return False
            self._gpu = any(
                int(((node.get("status") or {}).get("allocatable") or {}).get(manifests.GPU_RESOURCE, "0"))
                > 0
                for node in nodes.get("items") or []
            )
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
            nodes = raw(self.core.list_node, _request_timeout=CALL_TIMEOUT)["items"]
        cpus, memory = 0.0, 0
        for node in nodes:
            allocatable = (node.get("status") or {}).get("allocatable") or {}
            cpus += cluster.cpus(allocatable.get("cpu", "0"))
            memory += cluster.size_bytes(allocatable.get("memory", "0"))
        return HostCapacity(cpus=cpus, memory_bytes=memory)

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

    def start(self, plan: WorkspacePlan, log: LogSink) -> Observation:
        refusal = self.capabilities().refusal(plan)
        if refusal:
            raise RuntimeFailure(refusal)
        spec = from_plan(plan, self.agent_folders)
        with translate(self.address):
            return self._start(spec, log)

    def _start(self, spec: WorkspaceSpec, log: LogSink) -> Observation:
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
        fresh_home = self._ensure_home(spec, log)
        lap("volume")
        agent = self._ensure_agent(spec, log) if spec.agent_projected else None
        lap("agent")
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
        self._apply_policy(policy, log)
        lap("network")
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
        name = wanted["metadata"]["name"]
        current = self._read_pod(name)
        if current is not None:
            same = (current["metadata"].get("annotations") or {}).get(manifests.ANNOTATION_CONFIG) == wanted[
                "metadata"
            ]["annotations"][manifests.ANNOTATION_CONFIG]
            observation = states.observe(spec.workspace_id, current)
            alive = observation.state == ContainerState.RUNNING or (
                observation.state == ContainerState.STOPPED and observation.detail.startswith("pending")
            )
            if same and alive and not current["metadata"].get("deletionTimestamp"):
                log(f"Pod {name} exists already")
                uid = current["metadata"]["uid"]
            else:
                log(
                    f"Replacing pod {name}: {'its configuration changed' if not same else observation.detail}"
                )
                self._delete_pod(spec.workspace_id, log)
                current = None
        lap("inspect")
        if current is None:
            log(f"Creating pod {name} from {spec.image}")
            with self.cache.changed:
                self.cache.expected.discard(spec.workspace_id)
                self.cache.gone.pop(spec.workspace_id, None)
            created = raw(
                self.core.create_namespaced_pod, namespace, body(wanted), _request_timeout=CALL_TIMEOUT
            )
            uid = created["metadata"]["uid"]
            lap("create")
        observation = self._wait_running(spec.workspace_id, name, uid, log)
        lap("start")
        return Observation(
            observation.workspace_id,
            observation.state,
            observation.exit_code,
            observation.detail,
            observation.address,
            timings=timings,
        )

    def _ensure_home(self, spec: WorkspaceSpec, log: LogSink) -> bool:
        """Make the home claim (and its local volume); True when a local home may still be root's, which the
        pod's init container then hands to the user."""
        owner = self._owner()
        claim = manifests.claim(spec, self.options, deployment=owner)
        name = claim["metadata"]["name"]
        fresh = False
        if self.options.storage_class == LOCAL_STORAGE_CLASS:
            volume = manifests.local_volume(spec, self.options, deployment=owner)
            fresh = not self._own_local_folder(volume["spec"]["hostPath"]["path"], spec.uid)
            try:
                self.core.create_persistent_volume(body(volume), _request_timeout=CALL_TIMEOUT)
                log(
                    f"Created local volume {volume['metadata']['name']} ({volume['spec']['hostPath']['path']})"
                )
            except ApiException as exc:
                if exc.status != 409:
                    raise
        try:
            self.core.create_namespaced_persistent_volume_claim(
                self.options.namespace, body(claim), _request_timeout=CALL_TIMEOUT
            )
            log(f"Created home claim {name}")
        except ApiException as exc:
            if exc.status != 409:
                raise
            # An existing claim's home was handed over by the pod that first used it.
            fresh = False
            existing = raw(
                self.core.read_namespaced_persistent_volume_claim,
                name,
                self.options.namespace,
                _request_timeout=CALL_TIMEOUT,
            )
            self._claim(existing["metadata"].get("labels") or {}, f"Claim {name}")
        if self.options.storage_class == LOCAL_STORAGE_CLASS:
            # Bound before the pod exists: the scheduler retries a pod with an unbound claim only after a
            # back-off of up to a minute. (Other classes may bind on first use, so they are not waited for.)
            deadline = time.monotonic() + 30
            while True:
                phase = (
                    raw(
                        self.core.read_namespaced_persistent_volume_claim,
                        name,
                        self.options.namespace,
                        _request_timeout=CALL_TIMEOUT,
                    )
                    .get("status", {})
                    .get("phase")
                )
                if phase == "Bound" or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        return fresh

    def _own_local_folder(self, path: str, uid: int) -> bool:
        """Where the node is this host, make the local home's folder the user's here: no init container."""
        if not self.options.host_paths or os.geteuid() != 0:
            return False
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        if folder.stat().st_uid == 0:
            os.chown(folder, uid, uid)
        return True

    def _ensure_agent(self, spec: WorkspaceSpec, log: LogSink) -> manifests.AgentFiles:
        """The agent's ConfigMap (once per version) and the workspace's token Secret (at every start, since
        each build issues a new token)."""
        assert self.agent_folders is not None  # from_plan projects the agent only with folders bound
        files = manifests.agent_program(_program_files(self.agent_folders.program))
        namespace = self.options.namespace
        if files.name not in self._agent_maps:
            config_map = manifests.agent_config_map(files, self.options, deployment=self._owner())
            try:
                self.core.create_namespaced_config_map(
                    namespace, body(config_map), _request_timeout=CALL_TIMEOUT
                )
                log(f"Created agent program {files.name}")
            except ApiException as exc:
                if exc.status != 409:
                    raise
            self._agent_maps.add(files.name)
        token_file = self.agent_folders.links / spec.workspace_id / TOKEN_NAME
        try:
            token = token_file.read_text()
        except OSError as exc:
            raise RuntimeFailure(
                f"The agent's token for workspace {spec.workspace_id} is missing.", detail=str(exc)
            ) from exc
        secret = manifests.agent_secret(spec, token, self.options, deployment=self._owner())
        name = secret["metadata"]["name"]
        try:
            self.core.create_namespaced_secret(namespace, body(secret), _request_timeout=CALL_TIMEOUT)
        except ApiException as exc:
            if exc.status != 409:
                raise
            existing = raw(self.core.read_namespaced_secret, name, namespace, _request_timeout=CALL_TIMEOUT)
            self._claim(existing["metadata"].get("labels") or {}, f"Secret {name}")
            secret["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
            self.core.replace_namespaced_secret(name, namespace, body(secret), _request_timeout=CALL_TIMEOUT)
        return files

    def _apply_policy(self, policy: dict[str, Any], log: LogSink) -> None:
        name = policy["metadata"]["name"]
        namespace = self.options.namespace
        try:
            self.networking.create_namespaced_network_policy(
                namespace, body(policy), _request_timeout=CALL_TIMEOUT
            )
            log(f"Created network policy {name}")
        except ApiException as exc:
            if exc.status != 409:
                raise
            existing = raw(
                self.networking.read_namespaced_network_policy, name, namespace, _request_timeout=CALL_TIMEOUT
            )
            self._claim(existing["metadata"].get("labels") or {}, f"Network policy {name}")
            # Replaced with the version read, so that a concurrent change is a conflict rather than lost.
            policy["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
            self.networking.replace_namespaced_network_policy(
                name, namespace, body(policy), _request_timeout=CALL_TIMEOUT
            )

    def _claim(self, labels: dict[str, str], what: str) -> None:
        owner = labels.get(manifests.LABEL_DEPLOYMENT)
        if owner != self._owner():
            raise RuntimeFailure(
                f"{what} belongs to another Dockyard deployment in this namespace.",
                detail=f"deployment {owner}, this one {self.deployment}",
            )

    def _read_pod(self, name: str) -> dict[str, Any] | None:
        try:
            return raw(
                self.core.read_namespaced_pod, name, self.options.namespace, _request_timeout=CALL_TIMEOUT
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _wait_running(self, workspace_id: str, name: str, uid: str, log: LogSink) -> Observation:
        """Wait on the watch for pod `uid` to run; fail at once with the cluster's reason when it cannot."""
        deadline = time.monotonic() + self.options.ready_timeout
        said = ""
        while True:
            with self.cache.changed:
                synced = self.cache.synced
                pod = self.cache.pods.get(workspace_id)
                gone = self.cache.gone.get(workspace_id, "")
            if not synced:
                pod = self._read_pod(name)
            # The cache may still hold the pod this one replaced, until the watch delivers its deletion.
            if pod is not None and pod["metadata"].get("uid") != uid:
                pod = None
            if pod is not None:
                observation = states.observe(workspace_id, pod)
                if observation.state == ContainerState.RUNNING:
                    log(f"Pod {name} is running on {(pod.get('spec') or {}).get('nodeName', '?')}")
                    return observation
                failure = states.start_failure(pod)
                if failure:
                    raise RuntimeFailure(f"Pod {name} cannot start: {failure}")
                if observation.detail != said:
                    said = observation.detail
                    log(f"Pod {name}: {said}")
            elif synced and gone:
                raise RuntimeFailure(f"Pod {name} went away while starting: {gone}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeFailure(
                    f"Pod {name} did not run within {self.options.ready_timeout:g} s ({said or 'no status'})."
                )
            with self.cache.changed:
                # Woken by every watch event; the timeout also covers a watch that is reconnecting.
                self.cache.changed.wait(min(left, 1.0))

    def stop(self, workspace_id: str, log: LogSink) -> None:
        with translate(self.address):
            self._delete_pod(workspace_id, log)

    def _delete_pod(self, workspace_id: str, log: LogSink) -> None:
        name = manifests.pod_name(workspace_id)
        with self.cache.changed:
            self.cache.expected.add(workspace_id)
        try:
            self.core.delete_namespaced_pod(
                name, self.options.namespace, grace_period_seconds=5, _request_timeout=CALL_TIMEOUT
            )
            log(f"Deleting pod {name}")
        except ApiException as exc:
            if exc.status != 404:
                raise
            log(f"Pod {name} does not exist; nothing to stop")
            return
        # The next pod has the same name: wait until this one is gone so that the create does not conflict.
        # The kubelet removes a pod's object only at its next status sync after the clean-up (10 s and more on
        # a busy node); once every container has ended, nothing runs on the home any more, and the object is
        # removed at once (grace period 0, for that pod's uid only).
        deadline = time.monotonic() + 120
        forced = False
        while (pod := self._current_pod(workspace_id, name)) is not None:
            if not forced and _ended(pod):
                forced = _deleted(
                    lambda n: self.core.delete_namespaced_pod(
                        n,
                        self.options.namespace,
                        grace_period_seconds=0,
                        body=body({"preconditions": {"uid": pod["metadata"]["uid"]}}),
                        _request_timeout=CALL_TIMEOUT,
                    ),
                    name,
                    conflict_ok=True,
                )
            if time.monotonic() > deadline:
                raise RuntimeFailure(f"Pod {name} was not gone 120 s after its deletion.")
            with self.cache.changed:
                self.cache.changed.wait(0.5)
        log(f"Pod {name} is gone")

    def _current_pod(self, workspace_id: str, name: str) -> dict[str, Any] | None:
        """The pod as the watch last saw it (read from the API while the watch is not connected)."""
        with self.cache.changed:
            if self.cache.synced:
                return self.cache.pods.get(workspace_id)
        return self._read_pod(name)

    def delete(self, workspace_id: str, log: LogSink) -> None:
        with translate(self.address):
            self._delete_pod(workspace_id, log)
            namespace = self.options.namespace
            for kind, name, remove in (
                (
                    "network policy",
                    manifests.policy_name(workspace_id),
                    lambda n: self.networking.delete_namespaced_network_policy(n, namespace),
                ),
                (
                    "home claim",
                    manifests.claim_name(workspace_id),
                    lambda n: self.core.delete_namespaced_persistent_volume_claim(n, namespace),
                ),
                (
                    "agent token",
                    manifests.secret_name(workspace_id),
                    lambda n: self.core.delete_namespaced_secret(n, namespace),
                ),
            ):
                if _deleted(remove, name):
                    log(f"Removed {kind} {name}")
            if self.options.storage_class == LOCAL_STORAGE_CLASS:
                self._remove_local_volume(manifests.volume_name(namespace, workspace_id), log)
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
                self._remove_local_folder(manifests.volume_name(namespace, workspace_id))

    def _remove_local_volume(self, name: str, log: LogSink) -> None:
        if _deleted(lambda n: self.core.delete_persistent_volume(n), name):
            log(f"Removed local volume {name}")

    def _remove_local_folder(self, name: str) -> None:
        # The folder is on the node; it can be removed from here only where the node is this host.
        folder = Path(self.options.local_volume_root) / name
        if self.options.host_paths and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)

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
            pod = self._read_pod(manifests.pod_name(workspace_id))
            with self.cache.changed:
                gone = self.cache.gone.get(workspace_id, "")
            if pod is None and not gone and self._has_claim(workspace_id):
                # A stop deletes the pod and keeps the home claim: the workspace is down and still there.
                return Observation(
                    workspace_id, ContainerState.STOPPED, None, "stopped: no pod, the home is kept"
                )
        return states.observe(workspace_id, pod, gone=gone)

    def _has_claim(self, workspace_id: str) -> bool:
        try:
            raw(
                self.core.read_namespaced_persistent_volume_claim,
                manifests.claim_name(workspace_id),
                self.options.namespace,
                _request_timeout=CALL_TIMEOUT,
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def agent_addresses(self, workspace_id: str) -> frozenset[str] | None:
        # The pod's address: its agent's connections come from it where pods reach the server without NAT
        # (the usual pod network; a server outside the cluster behind NAT cannot check, see KUBERNETES.md).
        with self.cache.changed:
            synced = self.cache.synced
            pod = self.cache.pods.get(workspace_id)
        if not synced:
            with translate(self.address):
                pod = self._read_pod(manifests.pod_name(workspace_id))
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
        selector = manifests.selector(self._owner())
        namespace = self.options.namespace
        listings: list[tuple[str, Callable[..., Any], tuple[str, ...]]] = [
            ("pod", self.core.list_namespaced_pod, (namespace,)),
            ("persistentvolumeclaim", self.core.list_namespaced_persistent_volume_claim, (namespace,)),
            ("networkpolicy", self.networking.list_namespaced_network_policy, (namespace,)),
            ("secret", self.core.list_namespaced_secret, (namespace,)),
        ]
        if self.options.storage_class == LOCAL_STORAGE_CLASS:
            listings.append(("persistentvolume", self.core.list_persistent_volume, ()))
        found = []
        with translate(self.address):
            for kind, call, args in listings:
                for item in raw(call, *args, label_selector=selector, _request_timeout=CALL_TIMEOUT)["items"]:
                    claim_ref = (item.get("spec") or {}).get("claimRef") or {}
                    if kind == "persistentvolume" and claim_ref.get("namespace", namespace) != namespace:
                        continue
                    metadata = item["metadata"]
                    workspace_id = (metadata.get("labels") or {}).get(manifests.LABEL_WORKSPACE, "")
                    found.append(ManagedResource(kind, metadata["name"], workspace_id))
        return found

    def remove_resource(self, resource: ManagedResource) -> None:
        namespace = self.options.namespace
        removers: dict[str, Callable[[str], object]] = {
            "pod": lambda n: self.core.delete_namespaced_pod(n, namespace),
            "persistentvolumeclaim": lambda n: self.core.delete_namespaced_persistent_volume_claim(
                n, namespace
            ),
            "networkpolicy": lambda n: self.networking.delete_namespaced_network_policy(n, namespace),
            "persistentvolume": lambda n: self.core.delete_persistent_volume(n),
            "secret": lambda n: self.core.delete_namespaced_secret(n, namespace),
        }
        if resource.kind not in removers:
            raise ValueError(f"unknown resource kind {resource.kind!r}")
        with translate(self.address):
            # Only what still carries this deployment's label: the listing may be old.
            if resource.name not in {r.name for r in self.managed_resources() if r.kind == resource.kind}:
                return
            _deleted(removers[resource.kind], resource.name)
            if resource.kind == "persistentvolume":
                self._remove_local_folder(resource.name)

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


def _program_files(folder: Path) -> dict[str, tuple[bytes, int]]:
    """The agent's installed folder (tunnel/install.py): its files by relative path, executables 0555."""
    files = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        # `link` is the socket link's mount point; dotfiles are another process's half-written copies.
        if (
            not path.is_file()
            or relative.parts[0] == "link"
            or any(p.startswith(".") for p in relative.parts)
        ):
            continue
        files[relative.as_posix()] = (path.read_bytes(), 0o555 if os.access(path, os.X_OK) else 0o444)
    return files


def _ended(pod: dict[str, Any]) -> bool:
    """Whether every container of the pod has ended (or none ever started), as the kubelet reported."""
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return True
    if not (pod.get("spec") or {}).get("nodeName"):
        return True  # never scheduled: nothing ever ran
    containers = status.get("containerStatuses") or []
    return bool(containers) and all("terminated" in (c.get("state") or {}) for c in containers)


def _deleted(remove: Callable[[str], object], name: str, *, conflict_ok: bool = False) -> bool:
    try:
        remove(name)
    except ApiException as exc:
        # 409: a precondition failed (the name already belongs to a newer pod).
        if exc.status == 404 or (conflict_ok and exc.status == 409):
            return False
        raise
    return True
