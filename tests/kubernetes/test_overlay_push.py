"""A template's Kubernetes pod overlay is checked when it is pushed, and stored with the version."""

from __future__ import annotations

import pytest

from dockyard_sdk import ApiError
from tests.harness import Harness, manifest_yaml, tar_gz


def test_a_privileged_overlay_is_refused_at_push_and_nothing_is_stored(h: Harness) -> None:
    text = manifest_yaml(
        kubernetes={
            "pod": {
                "hostPID": True,
                "containers": [
                    {"name": "dind", "image": "docker:dind", "securityContext": {"privileged": True}}
                ],
            }
        }
    )
    with pytest.raises(ApiError) as info:
        h.admin.create_template(tar_gz({"dockyard.yaml": text}))
    error = info.value
    assert error.status_code == 422
    assert error.message == "dockyard.yaml has a Kubernetes pod overlay Dockyard refuses."
    assert sorted((v.field, v.detail) for v in error.validations) == [
        (
            "kubernetes.pod.containers[0].securityContext.privileged",
            "privileged containers, root and added capabilities need an admin's consent",
        ),
        (
            "kubernetes.pod.hostPID",
            "loosens the workspace's isolation; allowed: affinity, containers, dnsConfig, initContainers, "
            "nodeSelector, priorityClassName, runtimeClassName, tolerations, topologySpreadConstraints, volumes",
        ),
    ]
    assert h.admin.list_templates() == []


def test_an_admin_may_allow_privileged_overlays(h: Harness) -> None:
    text = manifest_yaml(
        kubernetes={
            "pod": {
                "containers": [
                    {"name": "dind", "image": "docker:dind", "securityContext": {"privileged": True}}
                ]
            }
        }
    )
    h.settings.kubernetes_allow_privileged = True
    template = h.admin.create_template(tar_gz({"dockyard.yaml": text}))
    assert template.active_version is not None
    overlay = template.active_version.manifest.kubernetes
    assert overlay is not None
    assert overlay.pod["containers"][0]["securityContext"] == {"privileged": True}


def test_a_common_overlay_is_stored_with_the_version(h: Harness) -> None:
    pod = {
        "nodeSelector": {"disk": "ssd"},
        "containers": [{"name": "workspace", "env": [{"name": "X", "value": "1"}]}],
    }
    template = h.admin.create_template(tar_gz({"dockyard.yaml": manifest_yaml(kubernetes={"pod": pod})}))
    assert template.active_version is not None
    assert template.active_version.manifest.kubernetes is not None
    assert template.active_version.manifest.kubernetes.pod == pod
