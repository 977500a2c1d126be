"""Reading pods back (the API's JSON, camelCase) as Dockyard observations and build failures."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dockyard.runtimes.base import ContainerState, Observation
from dockyard.runtimes.kubernetes.manifests import WORKSPACE_CONTAINER

# Waiting reasons that mean the pod will not start without someone changing something.
IMAGE_FAILURES = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
CONTAINER_FAILURES = frozenset({"CreateContainerConfigError", "CreateContainerError", "RunContainerError"})
STOP_EXIT_CODES = frozenset({143, 137})


def _statuses(pod: Mapping[str, Any], key: str = "containerStatuses") -> list[Mapping[str, Any]]:
    return list((pod.get("status") or {}).get(key) or [])


def _workspace_status(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    for status in _statuses(pod):
        if status.get("name") == WORKSPACE_CONTAINER:
            return status
    return {}


def observe(workspace_id: str, pod: Mapping[str, Any] | None, *, gone: str = "") -> Observation:
    """A pod (None when there is none) in Dockyard's words; `gone` says why a missing pod went, if known."""
    if pod is None:
        return Observation(workspace_id, ContainerState.MISSING, detail=gone or "no pod")
    status = pod.get("status") or {}
    metadata = pod.get("metadata") or {}
    address = status.get("podIP") or None
    if metadata.get("deletionTimestamp"):
        return Observation(workspace_id, ContainerState.STOPPED, detail="pod being deleted")
    phase = status.get("phase", "")
    reason = status.get("reason") or ""
    if reason == "Evicted":
        return Observation(
            workspace_id, ContainerState.EXITED, detail=f"evicted: {status.get('message') or 'by the node'}"
        )
    container = _workspace_status(pod)
    state = container.get("state") or {}
    terminated = state.get("terminated") or (container.get("lastState") or {}).get("terminated")
    if phase == "Running" and "running" in state:
        return Observation(workspace_id, ContainerState.RUNNING, detail="running", address=address)
    if terminated:
        code = terminated.get("exitCode")
        why = terminated.get("reason") or ""
        if why == "OOMKilled":
            return Observation(workspace_id, ContainerState.OOM_KILLED, code, "killed: out of memory")
        if code in STOP_EXIT_CODES:
            return Observation(workspace_id, ContainerState.STOPPED, code, "stopped")
        message = terminated.get("message") or why
        return Observation(
            workspace_id,
            ContainerState.EXITED,
            code,
            f"exited with code {code}" + (f": {message}" if message else ""),
        )
    if phase == "Failed":
        return Observation(
            workspace_id, ContainerState.EXITED, detail=status.get("message") or reason or "failed"
        )
    if phase in ("Pending", ""):
        # Scheduled or not, pulling, initialising: not running yet, and not a failure by itself.
        return Observation(
            workspace_id,
            ContainerState.STARTING,
            detail=f"pending: {start_problem(pod) or phase or 'created'}",
        )
    # Unknown (its node stopped reporting), or a container between states that the kubelet has not explained.
    return Observation(workspace_id, ContainerState.STOPPED, detail=f"{phase or 'no phase'}: not running")


def start_problem(pod: Mapping[str, Any]) -> str:
    """What keeps a pending pod from running, in the cluster's own words; "" when nothing is wrong yet."""
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            message = condition.get("message") or condition.get("reason") or "no node fits"
            # A claim that is being bound is a wait, not a failure.
            if "unbound immediate PersistentVolumeClaims" in message:
                return ""
            return f"unschedulable: {message}"
    for container in _statuses(pod, "initContainerStatuses") + _statuses(pod):
        waiting = (container.get("state") or {}).get("waiting") or {}
        why = waiting.get("reason") or ""
        if why in IMAGE_FAILURES or why in CONTAINER_FAILURES:
            message = waiting.get("message") or why
            return f"{why}: {message}"
    return ""


def start_failure(pod: Mapping[str, Any]) -> str | None:
    """Why a start cannot succeed, or None while it still may: the build fails with this line at once.

    Unschedulable is final for a workspace pod (nothing adds nodes here, and a cluster autoscaler reacts
    within the start's timeout if it exists); image pull errors are final too (a retry pulls the same name).
    """
    problem = start_problem(pod)
    if problem:
        return problem
    observation = observe("", pod)
    if observation.state in (ContainerState.EXITED, ContainerState.OOM_KILLED):
        return observation.detail
    # Init container failures (the home's owner step) end the pod with restartPolicy Never.
    for container in _statuses(pod, "initContainerStatuses"):
        terminated = (container.get("state") or {}).get("terminated") or {}
        if terminated and terminated.get("exitCode"):
            return f"init container {container.get('name')} exited with code {terminated.get('exitCode')}"
    return None
