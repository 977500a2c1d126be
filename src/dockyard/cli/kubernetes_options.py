"""The `--runtime kubernetes` options shared by `dockyard server` and `dockyard provisioner`."""

from __future__ import annotations

import re
from typing import Annotated

import typer

_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def _deployment_id(value: str) -> str:
    value = value.strip()
    if not _LABEL_VALUE.match(value):
        raise typer.BadParameter(
            "must be a Kubernetes label value: at most 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return value


Kubeconfig = Annotated[
    str | None,
    typer.Option(
        "--kubeconfig",
        envvar="DOCKYARD_KUBECONFIG",
        help="Kubeconfig of the workspaces' cluster (default: in-cluster, else ~/.kube/config).",
    ),
]
Namespace = Annotated[
    str,
    typer.Option(
        "--namespace",
        "--kubernetes-namespace",
        envvar="DOCKYARD_KUBERNETES_NAMESPACE",
        help="Namespace of the workspace pods (must exist).",
    ),
]
StorageClass = Annotated[
    str,
    typer.Option(
        "--storage-class",
        envvar="DOCKYARD_KUBERNETES_STORAGE_CLASS",
        help="Storage class of home claims; dockyard-local makes a hostPath volume per claim (no provisioner).",
    ),
]
RuntimeClass = Annotated[
    str,
    typer.Option(
        "--runtime-class",
        envvar="DOCKYARD_KUBERNETES_RUNTIME_CLASS",
        help="RuntimeClass of every workspace pod, e.g. gvisor or kata ('' for the node's default).",
    ),
]
PullSecrets = Annotated[
    list[str] | None,
    typer.Option(
        "--image-pull-secret",
        envvar="DOCKYARD_KUBERNETES_IMAGE_PULL_SECRETS",
        help="A Secret in the namespace used to pull workspace images; repeat for more.",
    ),
]
HostPaths = Annotated[
    bool,
    typer.Option(
        "--kubernetes-host-paths/--no-kubernetes-host-paths",
        envvar="DOCKYARD_KUBERNETES_HOST_PATHS",
        help="Mount the agent's folder into pods from this host (only for a one-node cluster on this host).",
    ),
]
AllowPrivileged = Annotated[
    bool,
    typer.Option(
        "--kubernetes-allow-privileged/--no-kubernetes-allow-privileged",
        envvar="DOCKYARD_KUBERNETES_ALLOW_PRIVILEGED",
        help="Let template pod overlays ask for privileged containers, root and host folders.",
    ),
]
PoliciesEnforced = Annotated[
    bool,
    typer.Option(
        "--kubernetes-policies-enforced/--no-kubernetes-policies-enforced",
        envvar="DOCKYARD_KUBERNETES_POLICIES_ENFORCED",
        help="The cluster's network plugin enforces NetworkPolicies (Calico, Cilium, ...): only then are "
        "templates with egress none or allowlist accepted (Dockyard cannot check it through the API).",
    ),
]
DeploymentId = Annotated[
    str,
    typer.Option(
        "--deployment-id",
        envvar="DOCKYARD_DEPLOYMENT_ID",
        callback=_deployment_id,
        help="This deployment's id, made at first start when not given; manifests label Dockyard's pods "
        "with it (dockyard.dev/deployment), which workspace network policies admit.",
    ),
]
