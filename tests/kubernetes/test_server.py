"""End to end through a real `dockyard server --runtime kubernetes` process and the real cluster.

The agent in the pod reaches the server through its link folder, mounted from this host (hostPath): the test
cluster's only node is this host (`--kubernetes-host-paths`). The networked agent link will replace that.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import kubernetes.client
import pytest

from dockyard.runtimes.kubernetes import manifests
from dockyard_sdk import models as m
from tests.live import LiveServer, start_live_server, stop_live_server

pytestmark = [pytest.mark.kubernetes, pytest.mark.timeout(600)]


def _server(kubeconfig: str, namespace: str) -> LiveServer:
    wanted = {
        "DOCKYARD_RUNTIME": "kubernetes",
        "DOCKYARD_KUBECONFIG": kubeconfig,
        "DOCKYARD_KUBERNETES_NAMESPACE": namespace,
        "DOCKYARD_KUBERNETES_HOST_PATHS": "1",
    }
    saved = {key: os.environ.get(key) for key in wanted}
    os.environ.update(wanted)
    try:
        return start_live_server()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def kube_live(kubeconfig: str, namespace: str) -> Iterator[LiveServer]:
    server = _server(kubeconfig, namespace)
    try:
        yield server
    finally:
        stop_live_server(server)


def _labelled(api: kubernetes.client.ApiClient, namespace: str, workspace_id: str) -> list[str]:
    core = kubernetes.client.CoreV1Api(api)
    networking = kubernetes.client.NetworkingV1Api(api)
    selector = f"{manifests.LABEL_WORKSPACE}={workspace_id}"
    found = [
        f"pod/{p.metadata.name}" for p in core.list_namespaced_pod(namespace, label_selector=selector).items
    ]
    found += [
        f"pvc/{c.metadata.name}"
        for c in core.list_namespaced_persistent_volume_claim(namespace, label_selector=selector).items
    ]
    found += [
        f"networkpolicy/{n.metadata.name}"
        for n in networking.list_namespaced_network_policy(namespace, label_selector=selector).items
    ]
    found += [f"pv/{v.metadata.name}" for v in core.list_persistent_volume(label_selector=selector).items]
    return sorted(found)


def _sh(live: LiveServer, ws: m.Workspace, command: str) -> m.ExecResult:
    return live.client.exec(ws.id, m.ExecRequest(command=command))  # type: ignore[arg-type]


def test_a_workspace_lives_its_whole_life_as_a_pod(
    kube_live: LiveServer, api: kubernetes.client.ApiClient, namespace: str
) -> None:
    assert "the kubernetes runtime answers" in kube_live.log()
    ws = kube_live.workspace("kube1")
    assert ws.agent is not None
    assert ws.agent.status == m.AgentConnection.CONNECTED
    result = _sh(kube_live, ws, "id -u; echo $HOME; echo kept > ~/notes.txt; hostname")
    assert result.exit_code == 0, result
    assert result.stdout.split() == ["1000", "/home/dev", "kube1"]
    assert _labelled(api, namespace, ws.id) == sorted(
        [
            f"pod/{manifests.pod_name(ws.id)}",
            f"pvc/{manifests.claim_name(ws.id)}",
            f"networkpolicy/{manifests.policy_name(ws.id)}",
            f"pv/{manifests.volume_name(namespace, ws.id)}",
        ]
    )

    kube_live.client.create_build(ws.id, m.CreateBuildRequest(transition=m.Transition.STOP))
    stopped = kube_live.client.get_workspace(ws.id, wait="done", timeout=120)
    assert stopped.status == m.WorkspaceStatus.STOPPED, stopped.status_reason
    assert f"pod/{manifests.pod_name(ws.id)}" not in _labelled(api, namespace, ws.id)
    assert f"pvc/{manifests.claim_name(ws.id)}" in _labelled(api, namespace, ws.id)

    again = kube_live.workspace("kube1")
    assert _sh(kube_live, again, "cat ~/notes.txt").stdout == "kept\n"

    kube_live.client.delete_workspace(ws.id)
    deleted = kube_live.client.get_workspace(ws.id, wait="done", timeout=120)
    assert deleted.status == m.WorkspaceStatus.DELETED, deleted.status_reason
    assert _labelled(api, namespace, ws.id) == []


def test_a_pod_deleted_behind_dockyards_back_shows_as_drift(
    kube_live: LiveServer, api: kubernetes.client.ApiClient, namespace: str
) -> None:
    ws = kube_live.workspace("kube2")
    kubernetes.client.CoreV1Api(api).delete_namespaced_pod(manifests.pod_name(ws.id), namespace)
    deadline = time.monotonic() + 60
    while True:
        seen = kube_live.client.get_workspace(ws.id)
        if seen.status_reason and "outside Dockyard" in seen.status_reason:
            break
        assert time.monotonic() < deadline, seen
        time.sleep(0.5)


def test_a_server_that_cannot_use_its_namespace_says_so(kubeconfig: str) -> None:
    server = _server(kubeconfig, "no-such-namespace")
    try:
        assert (
            "the kubernetes runtime cannot be used: Kubernetes namespace no-such-namespace does not exist"
            in server.log()
        )
        report = server.client.doctor()
        assert report.runtime == "kubernetes"
        assert report.runtime_ok is False
        assert report.runtime_error.startswith(
            "Kubernetes namespace no-such-namespace does not exist at https://"
        )
    finally:
        stop_live_server(server)
