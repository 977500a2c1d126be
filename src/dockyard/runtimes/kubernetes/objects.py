"""What the runtime's namespaced objects share: the call timeout, ownership by one deployment, idempotent deletes
and create-or-replace (network policies, agent token Secrets)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from dockyard.runtimes.base import LogSink, RuntimeFailure
from dockyard.runtimes.kubernetes import manifests
from dockyard.runtimes.kubernetes.cluster import body
from dockyard.runtimes.kubernetes.watch import raw

CALL_TIMEOUT = 30.0


def check_owner(labels: dict[str, str], what: str, *, deployment: str) -> None:
    """Refuse to adopt an object that another Dockyard deployment in the same namespace made."""
    owner = labels.get(manifests.LABEL_DEPLOYMENT)
    if owner != deployment:
        raise RuntimeFailure(
            f"{what} belongs to another Dockyard deployment in this namespace.",
            detail=f"deployment {owner}, this one {deployment}",
        )


def create_or_replace(
    manifest: dict[str, Any],
    *,
    create: Callable[..., Any],
    read: Callable[..., Any],
    replace: Callable[..., Any],
    namespace: str,
    deployment: str,
    what: str,
) -> bool:
    """Create the object, or replace the one of that name this deployment made; True when it was created."""
    name = manifest["metadata"]["name"]
    try:
        create(namespace, body(manifest), _request_timeout=CALL_TIMEOUT)
        return True
    except ApiException as exc:
        if exc.status != 409:
            raise
    existing = raw(read, name, namespace, _request_timeout=CALL_TIMEOUT)
    check_owner(existing["metadata"].get("labels") or {}, f"{what} {name}", deployment=deployment)
    # Replaced with the version read, so that a concurrent change is a conflict rather than lost.
    manifest["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
    replace(name, namespace, body(manifest), _request_timeout=CALL_TIMEOUT)
    return False


def apply_policy(
    networking: kubernetes.client.NetworkingV1Api,
    policy: dict[str, Any],
    *,
    namespace: str,
    deployment: str,
    log: LogSink,
) -> None:
    created = create_or_replace(
        policy,
        create=networking.create_namespaced_network_policy,
        read=networking.read_namespaced_network_policy,
        replace=networking.replace_namespaced_network_policy,
        namespace=namespace,
        deployment=deployment,
        what="Network policy",
    )
    if created:
        log(f"Created network policy {policy['metadata']['name']}")


def deleted(remove: Callable[[str], object], name: str, *, conflict_ok: bool = False) -> bool:
    """Delete by name; False when it was already gone (or, with conflict_ok, a precondition failed)."""
    try:
        remove(name)
    except ApiException as exc:
        # 409: a precondition failed (the name already belongs to a newer pod).
        if exc.status == 404 or (conflict_ok and exc.status == 409):
            return False
        raise
    return True
