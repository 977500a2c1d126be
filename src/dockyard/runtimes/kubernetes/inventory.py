"""Everything one deployment made, found by its label (the reconciler's orphan sweep), and how each kind goes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kubernetes.client

from dockyard.runtimes.base import LogSink, ManagedResource
from dockyard.runtimes.kubernetes import home, manifests
from dockyard.runtimes.kubernetes.objects import CALL_TIMEOUT, deleted
from dockyard.runtimes.kubernetes.options import LOCAL_STORAGE_CLASS, KubernetesOptions
from dockyard.runtimes.kubernetes.watch import raw


def removers(
    core: kubernetes.client.CoreV1Api, networking: kubernetes.client.NetworkingV1Api, *, namespace: str
) -> dict[str, Callable[[str], object]]:
    """A delete by name for each kind the runtime makes."""
    return {
        "pod": lambda n: core.delete_namespaced_pod(n, namespace, _request_timeout=CALL_TIMEOUT),
        "persistentvolumeclaim": lambda n: core.delete_namespaced_persistent_volume_claim(
            n, namespace, _request_timeout=CALL_TIMEOUT
        ),
        "networkpolicy": lambda n: networking.delete_namespaced_network_policy(
            n, namespace, _request_timeout=CALL_TIMEOUT
        ),
        "persistentvolume": lambda n: core.delete_persistent_volume(n, _request_timeout=CALL_TIMEOUT),
        "secret": lambda n: core.delete_namespaced_secret(n, namespace, _request_timeout=CALL_TIMEOUT),
    }


def managed(
    core: kubernetes.client.CoreV1Api,
    networking: kubernetes.client.NetworkingV1Api,
    options: KubernetesOptions,
    *,
    deployment: str,
) -> list[ManagedResource]:
    selector = manifests.selector(deployment)
    namespace = options.namespace
    listings: list[tuple[str, Callable[..., Any], tuple[str, ...]]] = [
        ("pod", core.list_namespaced_pod, (namespace,)),
        ("persistentvolumeclaim", core.list_namespaced_persistent_volume_claim, (namespace,)),
        ("networkpolicy", networking.list_namespaced_network_policy, (namespace,)),
        ("secret", core.list_namespaced_secret, (namespace,)),
    ]
    if options.storage_class == LOCAL_STORAGE_CLASS:
        listings.append(("persistentvolume", core.list_persistent_volume, ()))
    found = []
    for kind, call, args in listings:
        for item in raw(call, *args, label_selector=selector, _request_timeout=CALL_TIMEOUT)["items"]:
            # Volumes are cluster-wide: only those of claims in this namespace.
            claim_ref = (item.get("spec") or {}).get("claimRef") or {}
            if kind == "persistentvolume" and claim_ref.get("namespace", namespace) != namespace:
                continue
            metadata = item["metadata"]
            workspace_id = (metadata.get("labels") or {}).get(manifests.LABEL_WORKSPACE, "")
            found.append(ManagedResource(kind, metadata["name"], workspace_id))
    return found


def remove_workspace(
    core: kubernetes.client.CoreV1Api,
    networking: kubernetes.client.NetworkingV1Api,
    options: KubernetesOptions,
    workspace_id: str,
    *,
    log: LogSink,
) -> None:
    """Delete the workspace's objects other than its pod (each by its name: no listing needed)."""
    remove = removers(core, networking, namespace=options.namespace)
    for kind, what, name in (
        ("networkpolicy", "network policy", manifests.policy_name(workspace_id)),
        ("persistentvolumeclaim", "home claim", manifests.claim_name(workspace_id)),
        ("secret", "agent token", manifests.secret_name(workspace_id)),
    ):
        if deleted(remove[kind], name):
            log(f"Removed {what} {name}")
    if options.storage_class == LOCAL_STORAGE_CLASS:
        home.remove_local_volume(core, manifests.volume_name(options.namespace, workspace_id), log)
