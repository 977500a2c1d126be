"""A template's pod-spec overlay (`kubernetes: {pod: {...}}`): checked at push, merged into Dockyard's pod.

The overlay may add what a workspace needs from its cluster (environment, volumes and mounts, sidecars, node
selection, tolerations, affinity) and nothing that loosens the pod's isolation: host namespaces, host folders,
service accounts, root, privileges and added capabilities are refused unless the deployment's admin allows
privileged overlays. Unknown fields are refused too, so a misspelt key is an error rather than ignored.

Merging: maps merge key by key, lists of named things (containers, volumes, env, mounts) merge by name, and the
overlay's container named `workspace` adds to Dockyard's workspace container.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from dockyard.runtimes.kubernetes.manifests import HOME_INIT_CONTAINER, WORKSPACE_CONTAINER

POD_FIELDS = frozenset(
    {
        "containers",
        "initContainers",
        "volumes",
        "nodeSelector",
        "tolerations",
        "affinity",
        "priorityClassName",
        "topologySpreadConstraints",
        "dnsConfig",
        "runtimeClassName",
    }
)
CONTAINER_FIELDS = frozenset(
    {
        "name",
        "image",
        "imagePullPolicy",
        "command",
        "args",
        "workingDir",
        "env",
        "envFrom",
        "ports",
        "volumeMounts",
        "resources",
        "securityContext",
        "readinessProbe",
        "livenessProbe",
        "startupProbe",
    }
)
# The workspace container's image and command come from the template and the agent.
WORKSPACE_FIXED = frozenset({"image", "command", "args", "workingDir", "securityContext"})
SAFE_VOLUME_SOURCES = frozenset(
    {"emptyDir", "configMap", "secret", "persistentVolumeClaim", "projected", "downwardAPI", "ephemeral"}
)
SECURITY_FIELDS = frozenset(
    {
        "runAsUser",
        "runAsGroup",
        "runAsNonRoot",
        "allowPrivilegeEscalation",
        "privileged",
        "capabilities",
        "readOnlyRootFilesystem",
        "seccompProfile",
    }
)
# Names Dockyard's own pod uses; an overlay adding a volume or container by these names would replace them.
RESERVED_VOLUMES = frozenset({"home"})

Problem = tuple[str, str]


def validate(pod: Any, *, allow_privileged: bool = False, field: str = "kubernetes.pod") -> list[Problem]:
    """Every problem with an overlay as (field path, message); empty when it may be merged."""
    if not isinstance(pod, Mapping):
        return [(field, "must be a mapping of pod spec fields")]
    problems: list[Problem] = []
    for key in pod:
        if key not in POD_FIELDS:
            why = (
                "loosens the workspace's isolation"
                if key in ("hostNetwork", "hostPID", "hostIPC", "securityContext", "serviceAccountName")
                else "is not a field a template may set"
            )
            problems.append((f"{field}.{key}", f"{why}; allowed: {', '.join(sorted(POD_FIELDS))}"))
    for list_key in ("containers", "initContainers"):
        items = pod.get(list_key, [])
        if not isinstance(items, list):
            problems.append((f"{field}.{list_key}", "must be a list"))
            continue
        for index, item in enumerate(items):
            problems += _container(
                item,
                f"{field}.{list_key}[{index}]",
                allow_privileged=allow_privileged,
                init=list_key != "containers",
            )
    volumes = pod.get("volumes", [])
    if not isinstance(volumes, list):
        problems.append((f"{field}.volumes", "must be a list"))
    else:
        for index, volume in enumerate(volumes):
            problems += _volume(volume, f"{field}.volumes[{index}]", allow_privileged=allow_privileged)
    for map_key in ("nodeSelector", "affinity", "dnsConfig"):
        if map_key in pod and not isinstance(pod[map_key], Mapping):
            problems.append((f"{field}.{map_key}", "must be a mapping"))
    for list_key in ("tolerations", "topologySpreadConstraints"):
        if list_key in pod and not isinstance(pod[list_key], list):
            problems.append((f"{field}.{list_key}", "must be a list"))
    return problems


def _container(item: Any, where: str, *, allow_privileged: bool, init: bool) -> list[Problem]:
    if not isinstance(item, Mapping):
        return [(where, "must be a mapping")]
    problems: list[Problem] = []
    name = item.get("name")
    if not isinstance(name, str) or not name:
        problems.append((f"{where}.name", "every container needs a name"))
    is_workspace = not init and name == WORKSPACE_CONTAINER
    if init and name == HOME_INIT_CONTAINER:
        problems.append((f"{where}.name", f"{HOME_INIT_CONTAINER} is Dockyard's own init container"))
    for key in item:
        if key not in CONTAINER_FIELDS:
            problems.append((f"{where}.{key}", "is not a container field a template may set"))
        elif is_workspace and key in WORKSPACE_FIXED:
            problems.append((f"{where}.{key}", "the workspace container's is set by Dockyard"))
    if not is_workspace and "image" not in item:
        problems.append((f"{where}.image", "a sidecar needs an image"))
    security = item.get("securityContext")
    if security is not None:
        problems += _security(security, f"{where}.securityContext", allow_privileged=allow_privileged)
    return problems


def _security(security: Any, where: str, *, allow_privileged: bool) -> list[Problem]:
    if not isinstance(security, Mapping):
        return [(where, "must be a mapping")]
    problems = [
        (f"{where}.{k}", "is not a security field a template may set")
        for k in security
        if k not in SECURITY_FIELDS
    ]
    if allow_privileged:
        return problems
    refused = {
        "privileged": security.get("privileged") is True,
        "allowPrivilegeEscalation": security.get("allowPrivilegeEscalation") is True,
        "runAsNonRoot": security.get("runAsNonRoot") is False,
        "runAsUser": security.get("runAsUser") == 0,
        "capabilities": bool((security.get("capabilities") or {}).get("add")),
    }
    for key, bad in refused.items():
        if bad:
            problems.append(
                (
                    f"{where}.{key}",
                    "privileged containers, root and added capabilities need an admin's consent",
                )
            )
    return problems


def _volume(volume: Any, where: str, *, allow_privileged: bool) -> list[Problem]:
    if not isinstance(volume, Mapping):
        return [(where, "must be a mapping")]
    problems: list[Problem] = []
    name = volume.get("name")
    if not isinstance(name, str) or not name:
        problems.append((f"{where}.name", "every volume needs a name"))
    elif name in RESERVED_VOLUMES or name.startswith("host-"):
        problems.append((f"{where}.name", f"{name!r} is a name Dockyard's pod uses"))
    sources = [k for k in volume if k != "name"]
    if len(sources) != 1:
        problems.append((where, "give exactly one volume source"))
    for source in sources:
        if source == "hostPath" and allow_privileged:
            continue
        if source not in SAFE_VOLUME_SOURCES:
            problems.append(
                (
                    f"{where}.{source}",
                    "host folders need an admin's consent"
                    if source == "hostPath"
                    else f"not a volume source a template may use; allowed: {', '.join(sorted(SAFE_VOLUME_SOURCES))}",
                )
            )
    return problems


# --- merging ----------------------------------------------------------------------------------------------------

_NAMED_LISTS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
}


def merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """`overlay` merged into a copy of `base`: maps by key, named lists by name, anything else replaced."""
    result = copy.deepcopy(dict(base))
    for key, value in overlay.items():
        current = result.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            result[key] = merge(current, value)
        elif isinstance(current, list) and isinstance(value, list) and key in _NAMED_LISTS:
            result[key] = _merge_named(current, value, _NAMED_LISTS[key])
        elif isinstance(current, list) and isinstance(value, list) and key == "tolerations":
            result[key] = current + copy.deepcopy(value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _merge_named(base: list[Any], overlay: list[Any], key: str) -> list[Any]:
    merged = [copy.deepcopy(item) for item in base]
    index = {item.get(key): i for i, item in enumerate(merged) if isinstance(item, dict)}
    for item in overlay:
        name = item.get(key) if isinstance(item, Mapping) else None
        if name is not None and name in index:
            merged[index[name]] = merge(merged[index[name]], item)
        else:
            merged.append(copy.deepcopy(item))
    return merged
