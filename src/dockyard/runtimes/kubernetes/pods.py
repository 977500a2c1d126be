"""A workspace's pod: waiting on the watch until it runs (or the cluster says why it cannot), and deleting it
until it is gone, so that the next pod of the same name can be made."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from dockyard.runtimes.base import ContainerState, LogSink, Observation, RuntimeFailure
from dockyard.runtimes.kubernetes import manifests, states
from dockyard.runtimes.kubernetes.cluster import body
from dockyard.runtimes.kubernetes.objects import CALL_TIMEOUT, deleted
from dockyard.runtimes.kubernetes.watch import PodCache, raw

GONE_TIMEOUT = 120.0


def read(core: kubernetes.client.CoreV1Api, name: str, *, namespace: str) -> dict[str, Any] | None:
    try:
        return raw(core.read_namespaced_pod, name, namespace, _request_timeout=CALL_TIMEOUT)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def current(
    core: kubernetes.client.CoreV1Api, cache: PodCache, workspace_id: str, *, namespace: str
) -> dict[str, Any] | None:
    """The pod as the watch last saw it (read from the API while the watch is not connected)."""
    with cache.changed:
        if cache.synced:
            return cache.pods.get(workspace_id)
    return read(core, manifests.pod_name(workspace_id), namespace=namespace)


def ensure(
    core: kubernetes.client.CoreV1Api,
    cache: PodCache,
    workspace_id: str,
    wanted: dict[str, Any],
    current: dict[str, Any] | None,
    *,
    image: str,
    log: LogSink,
    lap: Callable[[str], None],
) -> str:
    """Keep the pod `current` when it can serve `wanted`, else (replace it and) create `wanted`; its uid."""
    name = wanted["metadata"]["name"]
    namespace = wanted["metadata"]["namespace"]
    if current is not None:
        why = stale(workspace_id, current, wanted)
        if not why:
            log(f"Pod {name} exists already")
            return str(current["metadata"]["uid"])
        log(f"Replacing pod {name}: {why}")
        delete(core, cache, workspace_id, namespace=namespace, log=log)
    lap("inspect")
    log(f"Creating pod {name} from {image}")
    with cache.changed:
        cache.expected.discard(workspace_id)
        cache.gone.pop(workspace_id, None)
    created = raw(core.create_namespaced_pod, namespace, body(wanted), _request_timeout=CALL_TIMEOUT)
    lap("create")
    return str(created["metadata"]["uid"])


def stale(workspace_id: str, pod: dict[str, Any], wanted: dict[str, Any]) -> str:
    """Why an existing pod cannot serve the start that wants `wanted` ("" when it can: same configuration, and
    running or still pending)."""
    annotation = manifests.ANNOTATION_CONFIG
    if (pod["metadata"].get("annotations") or {}).get(annotation) != wanted["metadata"]["annotations"][
        annotation
    ]:
        return "its configuration changed"
    observation = states.observe(workspace_id, pod)
    alive = observation.state in (ContainerState.RUNNING, ContainerState.STARTING)
    if not alive or pod["metadata"].get("deletionTimestamp"):
        return observation.detail or "it is being deleted"
    return ""


def wait_running(
    core: kubernetes.client.CoreV1Api,
    cache: PodCache,
    workspace_id: str,
    *,
    uid: str,
    namespace: str,
    timeout: float,
    log: LogSink,
    started: threading.Event | None = None,
) -> Observation:
    """Wait on the watch for pod `uid` to run; fail at once with the cluster's reason when it cannot.

    `started` set (the caller heard the workspace's agent) is proof that the container runs: the kubelet
    reports it only at its next relist, up to a second later (two for a pod with limits on cgroup v1).
    """
    name = manifests.pod_name(workspace_id)
    deadline = time.monotonic() + timeout
    said = ""
    while True:
        with cache.changed:
            synced = cache.synced
            pod = cache.pods.get(workspace_id)
            gone = cache.gone.get(workspace_id, "")
        if not synced:
            pod = read(core, name, namespace=namespace)
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
            if started is not None and started.is_set() and not pod["metadata"].get("deletionTimestamp"):
                log(
                    f"Pod {name} is running on {(pod.get('spec') or {}).get('nodeName', '?')} (its agent connected)"
                )
                return Observation(
                    workspace_id,
                    ContainerState.RUNNING,
                    detail="running (its agent connected)",
                    address=(pod.get("status") or {}).get("podIP") or None,
                )
            if observation.detail != said:
                said = observation.detail
                log(f"Pod {name}: {said}")
        elif synced and gone:
            raise RuntimeFailure(f"Pod {name} went away while starting: {gone}")
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeFailure(f"Pod {name} did not run within {timeout:g} s ({said or 'no status'}).")
        with cache.changed:
            # Woken by every watch event; the timeout also covers a watch that is reconnecting. `started` is
            # set on another thread without this condition: looked at every 50 ms (no call, a flag).
            cache.changed.wait(min(left, 1.0 if started is None else 0.05))


def delete(
    core: kubernetes.client.CoreV1Api, cache: PodCache, workspace_id: str, *, namespace: str, log: LogSink
) -> None:
    name = manifests.pod_name(workspace_id)
    with cache.changed:
        cache.expected.add(workspace_id)
    try:
        core.delete_namespaced_pod(name, namespace, grace_period_seconds=5, _request_timeout=CALL_TIMEOUT)
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
    deadline = time.monotonic() + GONE_TIMEOUT
    forced = False
    while (pod := current(core, cache, workspace_id, namespace=namespace)) is not None:
        if not forced and ended(pod):
            forced = deleted(
                functools.partial(_delete_now, core, namespace=namespace, uid=pod["metadata"]["uid"]),
                name,
                conflict_ok=True,
            )
        if time.monotonic() > deadline:
            raise RuntimeFailure(f"Pod {name} was not gone {GONE_TIMEOUT:g} s after its deletion.")
        with cache.changed:
            cache.changed.wait(0.5)
    log(f"Pod {name} is gone")


def _delete_now(core: kubernetes.client.CoreV1Api, name: str, *, namespace: str, uid: str) -> None:
    # The grace period goes in the body: with a body the API ignores the query's. The first call only shortens
    # the pending deletion's grace period to 0; the next finds it at 0 and removes the object.
    options = body({"gracePeriodSeconds": 0, "preconditions": {"uid": uid}})
    for _ in range(2):
        try:
            core.delete_namespaced_pod(name, namespace, body=options, _request_timeout=CALL_TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise


def ended(pod: dict[str, Any]) -> bool:
    """Whether every container of the pod has ended (or none ever started), as the kubelet reported."""
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return True
    if not (pod.get("spec") or {}).get("nodeName"):
        return True  # never scheduled: nothing ever ran
    containers = status.get("containerStatuses") or []
    return bool(containers) and all("terminated" in (c.get("state") or {}) for c in containers)
