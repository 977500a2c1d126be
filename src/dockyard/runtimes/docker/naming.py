"""Names and labels of the Docker objects that make up one workspace."""

from __future__ import annotations

import hashlib
import json
import re

from dockyard.runtimes.base import ImageSpec

LABEL_MANAGED = "dockyard.managed"
LABEL_WORKSPACE = "dockyard.workspace.id"
LABEL_OWNER = "dockyard.workspace.owner"
LABEL_TEMPLATE = "dockyard.template"
LABEL_BUILD = "dockyard.build"
LABEL_CONFIG = "dockyard.config-hash"
# An allowlist workspace's entries (JSON), read back to serve it again after a restart.
LABEL_EGRESS_ALLOW = "dockyard.egress.allow"
# "bridged" on a container plugged into the deployment bridge (`bridge.py`).
LABEL_NETWORK = "dockyard.network"
NETWORK_BRIDGED = "bridged"
# What a deployment-wide object is for ("workspace-bridge"); such objects belong to no workspace.
LABEL_ROLE = "dockyard.role"
# What the deployment bridge's host firewall rules name in place of a workspace.
BRIDGE_WORKSPACE = "bridge"
# The deployment (one database) that made the object; a deployment lists and removes only its own objects.
LABEL_DEPLOYMENT = "dockyard.deployment"

# Docker's own rule for container names; volume and network names accept the same characters.
_ID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,99}$")
_REPO_PART = re.compile(r"[^a-z0-9._-]+")


def _checked(workspace_id: str) -> str:
    if not _ID.match(workspace_id):
        raise ValueError(f"workspace id {workspace_id!r} cannot be used in a Docker object name")
    return workspace_id


def container_name(workspace_id: str) -> str:
    return f"dockyard-ws-{_checked(workspace_id)}"


def network_name(workspace_id: str) -> str:
    return f"dockyard-ws-{_checked(workspace_id)}"


def bridge_network_name(deployment: str) -> str:
    """The deployment bridge's network: one per deployment, shared by its egress-"all" workspaces."""
    return "dockyard-bridge-" + re.sub(r"[^a-zA-Z0-9_.-]", "-", deployment)[:80]


def volume_name(workspace_id: str) -> str:
    return f"dockyard-home-{_checked(workspace_id)}"


def extra_volume_name(workspace_id: str, name: str) -> str:
    """A dev container volume of the workspace (`mounts`); the name passed the plan's volume-name check."""
    return f"dockyard-vol-{_checked(workspace_id)}-{name}"


def object_labels(workspace_id: str) -> dict[str, str]:
    """Labels on every network and volume (and container) Dockyard creates for a workspace."""
    return {LABEL_MANAGED: "true", LABEL_WORKSPACE: workspace_id}


def owned_labels(workspace_id: str, deployment: str) -> dict[str, str]:
    """`object_labels` plus the deployment's id."""
    return {**object_labels(workspace_id), LABEL_DEPLOYMENT: deployment}


def bridge_name(network_id: str) -> str:
    """The host interface of a bridge network the engine named itself (no bridge.name option)."""
    return f"br-{network_id[:12]}"


def template_image_tag(spec: ImageSpec) -> str:
    """`dockyard/template-<template>:<hash>` for a Dockerfile build.

    The hash covers the template's content hash and also the Dockerfile path, the context and the build args:
    build args may be rendered from workspace parameters, so two builds of one template version can differ.
    """
    recipe = json.dumps(
        [spec.content_hash, spec.dockerfile, spec.context, sorted(spec.build_args.items())]
        + ([spec.target] if spec.target else []),
        separators=(",", ":"),
    )
    digest = hashlib.sha256(recipe.encode()).hexdigest()[:16]
    repo = _REPO_PART.sub("-", spec.template.lower()).strip("-._") or "template"
    return f"dockyard/template-{repo}:{digest}"
