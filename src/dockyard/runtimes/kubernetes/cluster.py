"""Reaching the cluster, checking at start that this server may do its work there, and reading quantities."""

from __future__ import annotations

from typing import Any

import kubernetes.client
import kubernetes.config
from kubernetes.client.exceptions import ApiException

from dockyard.runtimes.base import HostCapacity, RuntimeUnavailable
from dockyard.runtimes.kubernetes.errors import missing_namespace
from dockyard.runtimes.kubernetes.manifests import GPU_RESOURCE
from dockyard.runtimes.kubernetes.options import LOCAL_STORAGE_CLASS, KubernetesOptions
from dockyard.runtimes.kubernetes.watch import raw

# What the runtime must be allowed to do in its namespace; `check` asks for each, so RBAC problems show at start.
NEEDED = (
    ("", "pods", ("create", "delete", "get", "list", "watch")),
    ("", "persistentvolumeclaims", ("create", "delete", "get", "list")),
    ("", "secrets", ("create", "delete", "get", "list", "update")),
    ("", "configmaps", ("create",)),
    ("networking.k8s.io", "networkpolicies", ("create", "delete", "get", "list", "update")),
)
NEEDED_LOCAL = (("", "persistentvolumes", ("create", "delete", "get", "list")),)
TIMEOUT = 5.0


def client(kubeconfig: str | None) -> kubernetes.client.ApiClient:
    """A client for the kubeconfig; without one, the pod's service account in a cluster, else ~/.kube/config."""
    configuration = kubernetes.client.Configuration()
    if kubeconfig:
        kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config(client_configuration=configuration)
    # The client's default retries a refused connection three times, which delays every error report.
    configuration.retries = 1
    return kubernetes.client.ApiClient(configuration)


def body(manifest: dict[str, Any]) -> Any:
    """A manifest dict as a request body: the client sends a dict as it is (its signatures name model classes)."""
    return manifest


def check(api: kubernetes.client.ApiClient, options: KubernetesOptions, *, address: str) -> None:
    """Raise RuntimeUnavailable when the namespace is missing or RBAC denies something the runtime needs."""
    namespace = options.namespace
    core = kubernetes.client.CoreV1Api(api)
    try:
        core.read_namespace(namespace, _request_timeout=TIMEOUT)
    except ApiException as exc:
        if exc.status == 404:
            raise missing_namespace(namespace, address) from exc
        # A role limited to its namespace may not read namespaces, and needs not.
        if exc.status != 403:
            raise
    needed = NEEDED + (NEEDED_LOCAL if options.storage_class == LOCAL_STORAGE_CLASS else ())
    authorization = kubernetes.client.AuthorizationV1Api(api)
    denied = []
    for group, resource, verbs in needed:
        for verb in verbs:
            review = raw(
                authorization.create_self_subject_access_review,
                body(
                    {
                        "apiVersion": "authorization.k8s.io/v1",
                        "kind": "SelfSubjectAccessReview",
                        "spec": {
                            "resourceAttributes": {
                                "group": group,
                                "resource": resource,
                                "verb": verb,
                                "namespace": "" if resource == "persistentvolumes" else namespace,
                            }
                        },
                    }
                ),
                _request_timeout=TIMEOUT,
            )
            if not (review.get("status") or {}).get("allowed"):
                denied.append(f"{verb} {resource}")
    if denied:
        raise RuntimeUnavailable(
            f"RBAC forbids this server to {', '.join(denied)} in namespace {namespace}.",
            detail=f"API {address}",
        )


def has_gpu(core: kubernetes.client.CoreV1Api) -> bool:
    """Whether a node advertises GPUs (an extended resource from a device plugin; without one a pod asking for
    a GPU never schedules). Listing nodes needs a cluster-wide grant: the caller treats a refusal as no."""
    nodes = raw(core.list_node, _request_timeout=TIMEOUT)
    return any(
        int(((node.get("status") or {}).get("allocatable") or {}).get(GPU_RESOURCE, "0")) > 0
        for node in nodes.get("items") or []
    )


def capacity(core: kubernetes.client.CoreV1Api) -> HostCapacity:
    """What the nodes can run, summed over all of them."""
    cores, memory = 0.0, 0
    for node in raw(core.list_node, _request_timeout=TIMEOUT)["items"]:
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        cores += cpus(allocatable.get("cpu", "0"))
        memory += size_bytes(allocatable.get("memory", "0"))
    return HostCapacity(cpus=cores, memory_bytes=memory)


def cpus(value: str) -> float:
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def size_bytes(value: str) -> int:
    for suffix, factor in _UNITS.items():
        if value.endswith(suffix):
            return int(float(value[: -len(suffix)]) * factor)
    return int(float(value))
