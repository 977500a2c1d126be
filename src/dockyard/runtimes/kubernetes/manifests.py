"""A workspace spec as Kubernetes objects (plain dicts in the API's own JSON shape); no client calls here.

Per workspace `w`, in the runtime's namespace:
- Pod `dockyard-ws-w`: the workspace container as the template's uid (non-root, every capability dropped, no
  privilege escalation, the runtime's default seccomp profile), CPU/memory/GPU limits and requests, the home
  claim at /home/<user>, and, on the local storage class only, an init container that hands the fresh home
  folder to the user (hostPath volumes ignore fsGroup);
- PersistentVolumeClaim `dockyard-home-w` (and, on the local storage class, the PersistentVolume bound to it);
- NetworkPolicy `dockyard-ws-w`: no ingress but from Dockyard's own pods, egress none / all / CIDR allow-list,
  and never to other pods (the cluster's pod and service ranges are carved out of "all").
- Secret `dockyard-agent-w`: the agent's token, projected into the pod at AGENT_MOUNT/link/token next to the
  agent's program, which comes from one ConfigMap per agent version (`dockyard-agent-<digest>`, shared by the
  deployment's pods and labelled without a workspace).

Every object carries the labels of `labels()`; the runtime lists and deletes by them.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dockyard.runtimes.kubernetes.options import LOCAL_STORAGE_CLASS, KubernetesOptions
from dockyard.runtimes.kubernetes.spec import BindMount, WorkspaceSpec
from dockyard.runtimes.plan import AGENT_MOUNT, IDLE_COMMAND, LINK_MOUNT, TOKEN_NAME

PREFIX = "dockyard.dev"
LABEL_MANAGED = f"{PREFIX}/managed"
LABEL_WORKSPACE = f"{PREFIX}/workspace"
LABEL_OWNER = f"{PREFIX}/owner"
LABEL_TEMPLATE = f"{PREFIX}/template"
LABEL_DEPLOYMENT = f"{PREFIX}/deployment"
# Pods of Dockyard itself (server, provisioner): the only ones a workspace pod accepts connections from.
LABEL_COMPONENT = f"{PREFIX}/component"
ANNOTATION_CONFIG = f"{PREFIX}/config-hash"
ANNOTATION_BUILD = f"{PREFIX}/build"
WORKSPACE_CONTAINER = "workspace"
HOME_INIT_CONTAINER = "home-owner"
GPU_RESOURCE = "nvidia.com/gpu"

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE_BAD = re.compile(r"[^A-Za-z0-9_.-]+")


def _checked(workspace_id: str) -> str:
    # Object names are DNS labels: lowercase, at most 63 characters including the prefix.
    if not _NAME.match(workspace_id) or len(workspace_id) > 50:
        raise ValueError(f"workspace id {workspace_id!r} cannot be used in a Kubernetes object name")
    return workspace_id


def pod_name(workspace_id: str) -> str:
    return f"dockyard-ws-{_checked(workspace_id)}"


def policy_name(workspace_id: str) -> str:
    return f"dockyard-ws-{_checked(workspace_id)}"


def claim_name(workspace_id: str) -> str:
    return f"dockyard-home-{_checked(workspace_id)}"


def secret_name(workspace_id: str) -> str:
    return f"dockyard-agent-{_checked(workspace_id)}"


def volume_name(namespace: str, workspace_id: str) -> str:
    """The local PersistentVolume of a claim: cluster-wide, so it names the namespace too (hashed to fit)."""
    digest = hashlib.sha256(namespace.encode()).hexdigest()[:8]
    return f"dockyard-home-{digest}-{_checked(workspace_id)}"


def label_value(value: str) -> str:
    """A label value from free text: at most 63 characters of [A-Za-z0-9_.-], alphanumeric at both ends."""
    return _LABEL_VALUE_BAD.sub("-", value)[:63].strip("-_.")


def labels(spec: WorkspaceSpec, deployment: str, *, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return {
        **dict(extra or {}),
        LABEL_MANAGED: "true",
        LABEL_WORKSPACE: spec.workspace_id,
        LABEL_OWNER: label_value(spec.owner),
        LABEL_TEMPLATE: label_value(spec.template),
        LABEL_DEPLOYMENT: deployment,
    }


def selector(deployment: str, workspace_id: str | None = None) -> str:
    """A label selector for this deployment's objects (of one workspace)."""
    parts = [f"{LABEL_MANAGED}=true", f"{LABEL_DEPLOYMENT}={deployment}"]
    if workspace_id is not None:
        parts.append(f"{LABEL_WORKSPACE}={workspace_id}")
    return ",".join(parts)


def quantity_bytes(size: int) -> str:
    return str(size)


def cpu_quantity(cores: float) -> str:
    return f"{max(1, round(cores * 1000))}m"


def hostname(name: str) -> str:
    """A pod hostname (a DNS label) from the workspace's name."""
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-") or "workspace"


def home_path(spec: WorkspaceSpec) -> str:
    return f"/home/{spec.user}"


# --- the pod ----------------------------------------------------------------------------------------------------


def _resources(spec: WorkspaceSpec, options: KubernetesOptions) -> dict[str, Any]:
    fraction = min(max(options.request_fraction, 0.01), 1.0)
    limits: dict[str, str] = {
        "cpu": cpu_quantity(spec.cpu),
        "memory": quantity_bytes(spec.memory_bytes),
    }
    requests: dict[str, str] = {
        "cpu": cpu_quantity(spec.cpu * fraction),
        "memory": quantity_bytes(int(spec.memory_bytes * fraction)),
    }
    if spec.gpu:
        # Extended resources cannot be overcommitted: requests must equal limits.
        limits[GPU_RESOURCE] = str(spec.gpu)
        requests[GPU_RESOURCE] = str(spec.gpu)
    return {"limits": limits, "requests": requests}


def container_security(uid: int) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _host_volumes(mounts: Sequence[BindMount]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes, volume_mounts = [], []
    for index, mount in enumerate(mounts):
        name = f"host-{index}"
        volumes.append({"name": name, "hostPath": {"path": mount.source, "type": "Directory"}})
        volume_mounts.append({"name": name, "mountPath": mount.target, "readOnly": mount.read_only})
    return volumes, volume_mounts


def _env(spec: WorkspaceSpec) -> list[dict[str, str]]:
    env = {
        "HOME": home_path(spec),
        "USER": spec.user,
        "LOGNAME": spec.user,
        **spec.env,
    }
    return [{"name": key, "value": value} for key, value in sorted(env.items())]


def pod(
    spec: WorkspaceSpec,
    options: KubernetesOptions,
    *,
    deployment: str,
    overlay: Mapping[str, Any] | None = None,
    agent_files: AgentFiles | None = None,
    fresh_home: bool = True,
) -> dict[str, Any]:
    """The workspace's pod. `overlay` is the template's `kubernetes.pod` (checked at push), merged last;
    `agent_files` is the agent's ConfigMap, for a spec whose agent is projected. `fresh_home`: the local home
    volume may still be root's, so the pod hands it to the user first (one more container start)."""
    if spec.mounts and not options.host_paths:
        raise ValueError(
            "this Kubernetes runtime mounts no host folders (the agent's folder and link); "
            "they work only where the pods run on the server's host (host_paths)"
        )
    host_volumes, host_mounts = _host_volumes(spec.mounts)
    if spec.agent_projected:
        if not agent_files:
            raise ValueError("the agent's ConfigMap is needed for a pod whose agent dials the network")
        host_volumes.append(agent_volume(spec.workspace_id, agent_files))
        host_mounts.append({"name": AGENT_VOLUME, "mountPath": AGENT_MOUNT, "readOnly": True})
    home = home_path(spec)
    volumes: list[dict[str, Any]] = [
        {"name": "home", "persistentVolumeClaim": {"claimName": claim_name(spec.workspace_id)}},
        *host_volumes,
    ]
    container: dict[str, Any] = {
        "name": WORKSPACE_CONTAINER,
        "image": spec.image,
        "imagePullPolicy": options.image_pull_policy,
        "command": _workload(spec.command),
        "env": _env(spec),
        "workingDir": home,
        "resources": _resources(spec, options),
        "securityContext": container_security(spec.uid),
        "volumeMounts": [{"name": "home", "mountPath": home}, *host_mounts],
    }
    pod_spec: dict[str, Any] = {
        # A workspace that exits stays exited (and shows why) rather than restarting behind the user's back.
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "hostname": hostname(spec.name),
        "terminationGracePeriodSeconds": 10,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": spec.uid,
            "runAsGroup": spec.uid,
            "fsGroup": spec.uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if options.storage_class == LOCAL_STORAGE_CLASS and fresh_home:
        pod_spec["initContainers"] = [home_owner(spec, home, pull=options.image_pull_policy)]
    if options.runtime_class:
        pod_spec["runtimeClassName"] = options.runtime_class
    if options.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in options.image_pull_secrets]
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(spec.workspace_id),
            "namespace": options.namespace,
            "labels": labels(spec, deployment, extra=options.labels),
            "annotations": {ANNOTATION_BUILD: spec.build_id},
        },
        "spec": pod_spec,
    }
    if overlay:
        from dockyard.runtimes.kubernetes.overlay import merge

        manifest["spec"] = merge(manifest["spec"], overlay)
    manifest["metadata"]["annotations"][ANNOTATION_CONFIG] = config_hash(manifest["spec"])
    return manifest


# --- the agent --------------------------------------------------------------------------------------------------

AGENT_VOLUME = "dockyard-agent"
AGENT_TOKEN_KEY = "token"  # noqa: S105 - a key name


@dataclass(frozen=True)
class AgentFiles:
    """The agent's program folder as one ConfigMap: its name and which key becomes which path (and mode)."""

    name: str
    items: tuple[tuple[str, str, int], ...]  # (key, path under AGENT_MOUNT, mode)
    data: Mapping[str, bytes] = field(compare=False, repr=False)


def agent_program(files: Mapping[str, tuple[bytes, int]]) -> AgentFiles:
    """`files`: path under the agent folder -> (content, mode). Named by content, so that every version of the
    agent has its own ConfigMap and a pod never sees its program change under it."""
    digest = hashlib.sha256()
    items = []
    for path in sorted(files):
        content, mode = files[path]
        digest.update(f"{path}\0{mode}\0{len(content)}\0".encode() + content)
        # Keys are [-._a-zA-Z0-9]+: a path's folders become dashes.
        items.append((path.replace("/", "--"), path, mode))
    return AgentFiles(
        name=f"dockyard-agent-{digest.hexdigest()[:12]}",
        items=tuple(items),
        data={key: files[path][0] for key, path, _ in items},
    )


def agent_config_map(files: AgentFiles, options: KubernetesOptions, *, deployment: str) -> dict[str, Any]:
    text: dict[str, str] = {}
    binary: dict[str, str] = {}
    for key, content in files.data.items():
        try:
            text[key] = content.decode("utf-8")
        except UnicodeDecodeError:
            binary[key] = base64.b64encode(content).decode()
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": files.name,
            "namespace": options.namespace,
            "labels": {
                **options.labels,
                LABEL_MANAGED: "true",
                LABEL_DEPLOYMENT: deployment,
                LABEL_COMPONENT: "agent",
            },
        },
        "data": text,
        "binaryData": binary,
        # A version's program never changes: the kubelet need not watch it.
        "immutable": True,
    }


def agent_secret(
    spec: WorkspaceSpec, token: str, options: KubernetesOptions, *, deployment: str
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": secret_name(spec.workspace_id),
            "namespace": options.namespace,
            "labels": labels(spec, deployment, extra=options.labels),
        },
        "data": {AGENT_TOKEN_KEY: base64.b64encode(token.strip().encode()).decode()},
    }


def agent_volume(workspace_id: str, files: AgentFiles) -> dict[str, Any]:
    """The agent's program and the workspace's token in one read-only folder at AGENT_MOUNT.

    The token file is 0400; the pod's fsGroup (the workspace user's own group) adds group read, so the user
    reads it and nobody else in the pod does. One projected volume rather than a Secret mounted inside the
    ConfigMap's folder: a read-only volume cannot take another's mount point.
    """
    link = LINK_MOUNT.removeprefix(AGENT_MOUNT).strip("/")
    return {
        "name": AGENT_VOLUME,
        "projected": {
            "defaultMode": 0o444,
            "sources": [
                {
                    "configMap": {
                        "name": files.name,
                        "items": [
                            {"key": key, "path": path, "mode": mode} for key, path, mode in files.items
                        ],
                    }
                },
                {
                    "secret": {
                        "name": secret_name(workspace_id),
                        "items": [{"key": AGENT_TOKEN_KEY, "path": f"{link}/{TOKEN_NAME}", "mode": 0o400}],
                    }
                },
            ],
        },
    }


def home_owner(spec: WorkspaceSpec, home: str, *, pull: str = "IfNotPresent") -> dict[str, Any]:
    """An init container that gives a fresh hostPath home to the user: the one step that runs as root.

    It holds CHOWN alone (every other capability dropped, no escalation) and touches only the home's top
    folder, and only when root owns it (a new volume); the workspace container itself never runs as root.
    """
    script = f'[ "$(stat -c %u {home})" = 0 ] && chown {spec.uid}:{spec.uid} {home}; exit 0'
    return {
        "name": HOME_INIT_CONTAINER,
        "image": spec.image,
        "imagePullPolicy": pull,
        "command": ["/bin/sh", "-c", script],
        "resources": {
            "limits": {"cpu": "100m", "memory": "64Mi"},
            "requests": {"cpu": "10m", "memory": "16Mi"},
        },
        "securityContext": {
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "home", "mountPath": home}],
    }


def config_hash(pod_spec: Mapping[str, Any]) -> str:
    """What a running pod was made from: a start finds a pod with the same hash and keeps it. The home's
    one-off init container is left out: a pod made with it runs the same workspace as one made without."""
    inits = [c for c in pod_spec.get("initContainers") or [] if c.get("name") != HOME_INIT_CONTAINER]
    hashed = {**pod_spec, "initContainers": inits}
    return hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:16]


def _workload(command: Sequence[str]) -> list[str]:
    # `sleep infinity` as PID 1 ignores SIGTERM, so every stop would sit out the grace period; the same idle
    # workload that ends when asked.
    if tuple(command) == IDLE_COMMAND:
        return ["/bin/sh", "-c", "trap 'exit 0' TERM; sleep infinity & wait"]
    return list(command)


# --- the home ---------------------------------------------------------------------------------------------------


def claim(
    spec: WorkspaceSpec, options: KubernetesOptions, *, deployment: str, size: str | None = None
) -> dict[str, Any]:
    size = size or (str(spec.disk_bytes) if spec.disk_bytes else options.default_home_size)
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": claim_name(spec.workspace_id),
            "namespace": options.namespace,
            "labels": labels(spec, deployment, extra=options.labels),
        },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": options.storage_class,
            "resources": {"requests": {"storage": size}},
        },
    }
    # No volumeName, even on the local class: its volume is made after it, pre-bound by the claim's uid (home.py).
    return manifest


def local_volume(
    spec: WorkspaceSpec,
    options: KubernetesOptions,
    *,
    deployment: str,
    claim_uid: str,
    size: str | None = None,
) -> dict[str, Any]:
    """The hostPath PersistentVolume made for one claim on the local storage class (no provisioner), pre-bound to
    that claim by its uid, as a provisioner does: no other claim can take it."""
    size = size or (str(spec.disk_bytes) if spec.disk_bytes else options.default_home_size)
    name = volume_name(options.namespace, spec.workspace_id)
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": labels(spec, deployment, extra=options.labels)},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": ["ReadWriteOnce"],
            # Delete would need a provisioner's recycler; the runtime removes the folder's volume itself.
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": LOCAL_STORAGE_CLASS,
            "claimRef": {
                "namespace": options.namespace,
                "name": claim_name(spec.workspace_id),
                "uid": claim_uid,
            },
            "hostPath": {
                "path": f"{options.local_volume_root.rstrip('/')}/{name}",
                "type": "DirectoryOrCreate",
            },
        },
    }


# --- the network policy -----------------------------------------------------------------------------------------


def allow_cidrs(entries: Sequence[str]) -> list[str]:
    """The CIDRs of an egress allow-list; a NetworkPolicy cannot name hosts, so a host name is refused."""
    cidrs = []
    for entry in entries:
        try:
            cidrs.append(str(ipaddress.ip_network(entry, strict=False)))
        except ValueError as exc:
            raise ValueError(
                f"egress allow-list entry {entry!r} is not an address or CIDR; "
                "Kubernetes network policies match addresses, not host names"
            ) from exc
    return cidrs


def network_policy(
    spec: WorkspaceSpec,
    options: KubernetesOptions,
    *,
    deployment: str,
    allow: Sequence[str] = (),
    cluster_cidrs: Sequence[str] = (),
) -> dict[str, Any]:
    """Ingress only from Dockyard's pods; egress by the template's `network.egress`, never to other pods.

    `cluster_cidrs` (the pod and service ranges) are carved out of "all" and of an allow-list, so that a
    workspace with egress still cannot reach other workspaces or cluster services; the control plane stays
    reachable through its pods' label.
    """
    dockyard_pods = {
        "podSelector": {"matchLabels": {LABEL_COMPONENT: "server", LABEL_DEPLOYMENT: deployment}},
        "namespaceSelector": {},
    }
    egress: list[dict[str, Any]] = [{"to": [dockyard_pods]}]
    if spec.egress == "all":
        blocks = [("0.0.0.0/0", "v4"), ("::/0", "v6")]
    elif spec.egress == "allowlist":
        blocks = [(c, "v6" if ":" in c else "v4") for c in allow_cidrs(allow)]
    else:
        blocks = []
    carved = allow_cidrs(cluster_cidrs)
    for cidr, family in blocks:
        block: dict[str, Any] = {"cidr": cidr}
        network = ipaddress.ip_network(cidr)
        inside = [
            c
            for c in carved
            if ("v6" if ":" in c else "v4") == family
            and ipaddress.ip_network(c).subnet_of(network)  # type: ignore[arg-type]
            and ipaddress.ip_network(c) != network
        ]
        if inside:
            block["except"] = inside
        egress.append({"to": [{"ipBlock": block}]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": policy_name(spec.workspace_id),
            "namespace": options.namespace,
            "labels": labels(spec, deployment, extra=options.labels),
        },
        "spec": {
            "podSelector": {"matchLabels": {LABEL_WORKSPACE: spec.workspace_id}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [dockyard_pods]}],
            "egress": egress,
        },
    }
