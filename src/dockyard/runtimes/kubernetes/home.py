"""The workspace's home: a PersistentVolumeClaim that outlives its pods and, on the `dockyard-local` class, the
hostPath PersistentVolume the runtime makes for it (no provisioner).

Binding on the local class. The volume is made as a provisioner makes one: after its claim, pre-bound to it by the
claim's uid. A new volume bound by uid makes the PV controller sync that claim at once (its syncVolume enqueues the
claim), so the pair is bound within one controller round trip. The other order (a pre-bound volume first, then a
claim naming it in spec.volumeName) is bound only when the controller's informer already holds the volume as the
claim arrives; otherwise the claim waits for the controller's resync period (15 s by default), which made a start
take anywhere from 0.1 to 30 s. The runtime does not write the binding itself: a claim annotated bind-completed
whose volume the controller has not seen yet is marked Lost, and writing the claim's status needs more RBAC.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from dockyard.runtimes.base import LogSink, RuntimeFailure
from dockyard.runtimes.kubernetes import manifests
from dockyard.runtimes.kubernetes.cluster import body
from dockyard.runtimes.kubernetes.objects import CALL_TIMEOUT, check_owner, deleted
from dockyard.runtimes.kubernetes.options import LOCAL_STORAGE_CLASS, KubernetesOptions
from dockyard.runtimes.kubernetes.spec import WorkspaceSpec
from dockyard.runtimes.kubernetes.watch import raw

BIND_TIMEOUT = 30.0


def ensure(
    core: kubernetes.client.CoreV1Api,
    spec: WorkspaceSpec,
    options: KubernetesOptions,
    *,
    deployment: str,
    log: LogSink,
) -> bool:
    """Make the home claim (and its local volume); True when a local home may still be root's, which the pod's
    init container then hands to the user."""
    namespace = options.namespace
    manifest = manifests.claim(spec, options, deployment=deployment)
    name = manifest["metadata"]["name"]
    local = options.storage_class == LOCAL_STORAGE_CLASS
    fresh = False
    if local:
        path = (
            f"{options.local_volume_root.rstrip('/')}/{manifests.volume_name(namespace, spec.workspace_id)}"
        )
        fresh = not _own_local_folder(options, path, spec.uid)
    try:
        claim = raw(
            core.create_namespaced_persistent_volume_claim,
            namespace,
            body(manifest),
            _request_timeout=CALL_TIMEOUT,
        )
        log(f"Created home claim {name}")
    except ApiException as exc:
        if exc.status != 409:
            raise
        # An existing claim's home was handed over by the pod that first used it.
        fresh = False
        claim = raw(
            core.read_namespaced_persistent_volume_claim, name, namespace, _request_timeout=CALL_TIMEOUT
        )
        check_owner(claim["metadata"].get("labels") or {}, f"Claim {name}", deployment=deployment)
    if local and (claim.get("status") or {}).get("phase") != "Bound":
        volume = manifests.local_volume(
            spec, options, deployment=deployment, claim_uid=claim["metadata"]["uid"]
        )
        try:
            core.create_persistent_volume(body(volume), _request_timeout=CALL_TIMEOUT)
            log(f"Created local volume {volume['metadata']['name']} ({volume['spec']['hostPath']['path']})")
        except ApiException as exc:
            if exc.status != 409:
                raise
        # Bound before the pod exists: the scheduler retries a pod with an unbound claim only after a back-off
        # of up to a minute. (Other classes may bind on first use, so they are not waited for.)
        _wait_bound(core, name, namespace)
    return fresh


def _wait_bound(core: kubernetes.client.CoreV1Api, name: str, namespace: str) -> None:
    # Polled with a back-off rather than watched: binding takes one controller round trip, and a watch would
    # need a grant (watch persistentvolumeclaims) the runtime does not ask for otherwise.
    deadline = time.monotonic() + BIND_TIMEOUT
    pause = 0.02
    while True:
        claim = raw(
            core.read_namespaced_persistent_volume_claim, name, namespace, _request_timeout=CALL_TIMEOUT
        )
        phase = (claim.get("status") or {}).get("phase")
        if phase == "Bound":
            return
        if phase == "Lost" or time.monotonic() > deadline:
            raise RuntimeFailure(
                f"Home claim {name} was not bound to its local volume within {BIND_TIMEOUT:g} s.",
                detail=f"claim phase {phase}",
            )
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


def _own_local_folder(options: KubernetesOptions, path: str, uid: int) -> bool:
    """Where the node is this host, make the local home's folder the user's here: no init container."""
    if not options.host_paths or os.geteuid() != 0:
        return False
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    if folder.stat().st_uid == 0:
        os.chown(folder, uid, uid)
    return True


def exists(core: kubernetes.client.CoreV1Api, workspace_id: str, *, namespace: str) -> bool:
    try:
        raw(
            core.read_namespaced_persistent_volume_claim,
            manifests.claim_name(workspace_id),
            namespace,
            _request_timeout=CALL_TIMEOUT,
        )
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def remove_local_volume(core: kubernetes.client.CoreV1Api, name: str, log: LogSink) -> None:
    if deleted(lambda n: core.delete_persistent_volume(n), name):
        log(f"Removed local volume {name}")


def remove_local_folder(options: KubernetesOptions, name: str) -> None:
    # The folder is on the node; it can be removed from here only where the node is this host.
    folder = Path(options.local_volume_root) / name
    if options.host_paths and folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)
