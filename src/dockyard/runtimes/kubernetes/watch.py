"""List+watch of one deployment's pods: the runtime's picture of its workspaces, and what starts wait on."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import kubernetes.client
import kubernetes.watch

from dockyard import logs
from dockyard.runtimes.base import ContainerState
from dockyard.runtimes.kubernetes import manifests, states

_log = logs.get("dockyard.runtimes.kubernetes")
LIST_TIMEOUT = 30.0
# A watch is re-opened this often, so that a connection a proxy dropped silently is noticed.
WATCH_SECONDS = 60


def raw(call: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """An API call's JSON as the API wrote it (camelCase), not the client's model objects."""
    response = call(*args, _preload_content=False, **kwargs)
    result: dict[str, Any] = json.loads(response.data)
    return result


def _unknown_deletion() -> str:
    return "the pod was deleted outside Dockyard"


class PodCache:
    """Every pod of one deployment, kept current by list+watch; waiters are woken on each change."""

    def __init__(self) -> None:
        self.pods: dict[str, dict[str, Any]] = {}
        # Why a pod went, when Dockyard did not delete it itself (kept until the workspace starts again).
        self.gone: dict[str, str] = {}
        self.expected: set[str] = set()
        self.synced = False
        self.error = ""
        self.changed = threading.Condition()

    def replace(self, pods: list[dict[str, Any]]) -> None:
        with self.changed:
            fresh = {_workspace(p): p for p in pods if _workspace(p)}
            for workspace_id in set(self.pods) - set(fresh):
                self._went(workspace_id, self.pods[workspace_id])
            self.pods = fresh
            self.synced = True
            self.error = ""
            self.changed.notify_all()

    def apply(self, kind: str, pod: dict[str, Any]) -> None:
        workspace_id = _workspace(pod)
        if not workspace_id:
            return
        with self.changed:
            if kind == "DELETED":
                previous = self.pods.pop(workspace_id, None)
                if previous is not None and previous["metadata"].get("uid") == pod["metadata"].get("uid"):
                    self._went(workspace_id, pod)
            else:
                self.pods[workspace_id] = pod
                self.gone.pop(workspace_id, None)
            self.changed.notify_all()

    def _went(self, workspace_id: str, pod: dict[str, Any]) -> None:
        if workspace_id in self.expected:
            return
        observation = states.observe(workspace_id, pod)
        reason = _unknown_deletion()
        if observation.state in (ContainerState.EXITED, ContainerState.OOM_KILLED):
            reason += f" after it {observation.detail}"
        self.gone[workspace_id] = reason

    def failed(self, error: str) -> None:
        with self.changed:
            self.synced = False
            self.error = error
            self.changed.notify_all()


def _workspace(pod: dict[str, Any]) -> str:
    return str(((pod.get("metadata") or {}).get("labels") or {}).get(manifests.LABEL_WORKSPACE, ""))


def watch_pods(
    core: kubernetes.client.CoreV1Api,
    namespace: str,
    selector: str,
    *,
    cache: PodCache,
    stop: threading.Event,
) -> None:
    """List, then watch from the list's version; on any failure list again after a growing pause."""
    backoff = 0.5
    while not stop.is_set():
        try:
            listing = raw(
                core.list_namespaced_pod, namespace, label_selector=selector, _request_timeout=LIST_TIMEOUT
            )
            cache.replace(listing.get("items") or [])
            version = listing["metadata"].get("resourceVersion")
            backoff = 0.5
            watch = kubernetes.watch.Watch()
            for event in watch.stream(
                core.list_namespaced_pod,
                namespace,
                label_selector=selector,
                resource_version=version,
                timeout_seconds=WATCH_SECONDS,
            ):
                if stop.is_set():
                    watch.stop()
                    break
                kind = event.get("type", "")
                if kind == "ERROR":
                    break  # 410 Gone (the version is too old): list again
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    cache.apply(kind, event.get("raw_object") or {})
        except Exception as exc:  # noqa: BLE001 - the outermost iteration of the watch loop
            _log.warning("pod watch failed; listing again", error=str(exc))
            cache.failed(str(exc))
            stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)
