"""Dockyard on Kubernetes: the manifests of deploy/kubernetes applied to the test cluster with `kubectl apply -k`.

The images are built into the local engine, which is the node's (scripts/kubernetes-images.sh; cached, so
seconds after the first build). deploy/kubernetes/test-cluster adds the in-cluster PostgreSQL and the test
cluster's addresses; this test sets the images' tags in an overlay of it, routes the Services' addresses as
kube-proxy would (tests/kubernetes/services.py), then provisions a workspace through the in-cluster servers
and removes everything it applied.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes.client
import pytest
import yaml

from dockyard.runtimes.kubernetes import manifests
from dockyard_sdk import Client
from dockyard_sdk import models as m
from tests.kubernetes.services import Route, ServiceRoutes

pytestmark = [pytest.mark.kubernetes, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
OVERLAY = REPO / "deploy" / "kubernetes" / "test-cluster"
NAMESPACE = "dockyard-deploy-test"
WORKSPACES = "dockyard-deploy-test-ws"
DEPLOYMENT = "deploy-test"
SERVICE_ACCOUNT = f"system:serviceaccount:{NAMESPACE}:dockyard"
KUBECTL = Path(os.environ.get("DOCKYARD_K8S_CACHE", "/var/cache/dockyard/kubernetes")) / "bin" / "kubectl"
VOLUMES = Path("/var/lib/dockyard-volumes")
# The Services' addresses in the overlay (the test cluster has no DNS: the URLs name them).
ROUTES = [
    Route(NAMESPACE, "dockyard", "10.254.0.240", 80, 3000),
    Route(NAMESPACE, "postgres", "10.254.0.241", 5432, 5432),
]


def kubectl(kubeconfig: str, *args: str, timeout: float = 180) -> str:
    done = subprocess.run(
        [str(KUBECTL), "--kubeconfig", kubeconfig, *args], capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}{done.stdout}"
    return done.stdout


def can_i(kubeconfig: str, verb: str, resource: str, namespace: str) -> str:
    done = subprocess.run(
        [str(KUBECTL), "--kubeconfig", kubeconfig, "auth", "can-i", verb, resource, "-n", namespace,
         "--as", SERVICE_ACCOUNT],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return done.stdout.strip()


def _images() -> tuple[str, str]:
    """Built once per uv.lock and source tree; scripts/test.sh builds them in the background beforehand."""
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "kubernetes-images.sh")], capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, done.stderr
    server, postgres = done.stdout.strip().splitlines()[-1].split()
    return server, postgres


def _overlay(folder: Path, server: str, postgres: str) -> Path:
    folder.mkdir()
    (folder / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "bases": [os.path.relpath(OVERLAY, folder)],
                "images": [
                    {"name": image.split(":")[0], "newTag": image.split(":")[1]}
                    for image in (server, postgres)
                ],
            }
        )
    )
    return folder


def _remove_volumes(api: kubernetes.client.ApiClient) -> None:
    """The deployment's local volumes: cluster-wide and kept (Retain) when a failed run left its workspace. The
    server is not the node's host here, so their folders on the node (this host) are removed here too."""
    core = kubernetes.client.CoreV1Api(api)
    for volume in core.list_persistent_volume(
        label_selector=f"{manifests.LABEL_DEPLOYMENT}={DEPLOYMENT}"
    ).items:
        core.delete_persistent_volume(volume.metadata.name)
        if volume.spec.host_path is not None:
            shutil.rmtree(volume.spec.host_path.path, ignore_errors=True)


def _gone(api: kubernetes.client.ApiClient, timeout: float = 180) -> None:
    core = kubernetes.client.CoreV1Api(api)
    deadline = time.monotonic() + timeout
    while {n.metadata.name for n in core.list_namespace().items} & {NAMESPACE, WORKSPACES}:
        assert time.monotonic() < deadline, "the test namespaces were not removed"
        time.sleep(1)


@pytest.fixture(scope="module")
def deployed(
    kubeconfig: str, api: kubernetes.client.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    server, postgres = _images()
    overlay = _overlay(tmp_path_factory.mktemp("deploy") / "overlay", server, postgres)
    # What an interrupted run left behind.
    kubectl(kubeconfig, "delete", "-k", str(overlay), "--ignore-not-found", "--wait=false")
    _gone(api)
    _remove_volumes(api)
    address = urlsplit(api.configuration.host)
    routes = ServiceRoutes(
        api, ROUTES, chain="DOCKYARD-DEPLOY-TEST", api_target=(address.hostname or "", address.port or 443)
    )
    try:
        kubectl(kubeconfig, "apply", "-k", str(overlay))
        yield overlay
    finally:
        try:
            kubectl(kubeconfig, "delete", "-k", str(overlay), "--ignore-not-found", "--wait=false")
            _gone(api)
            _remove_volumes(api)
        finally:
            routes.close()


def _ready_pods(api: kubernetes.client.ApiClient, component: str) -> list[kubernetes.client.V1Pod]:
    pods = kubernetes.client.CoreV1Api(api).list_namespaced_pod(
        NAMESPACE, label_selector=f"dockyard.dev/component={component}"
    )
    return [
        p
        for p in pods.items
        if p.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]


def _admin_token(kubeconfig: str, pods: list[kubernetes.client.V1Pod]) -> str:
    """The documented bootstrap: the replica that made the first owner wrote its token into its data dir."""
    for pod in pods:
        done = subprocess.run(
            [str(KUBECTL), "--kubeconfig", kubeconfig, "-n", NAMESPACE, "exec", pod.metadata.name, "--",
             "cat", "/var/lib/dockyard/data/admin-token"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if done.returncode == 0:
            return done.stdout.strip()
    raise AssertionError("no server replica holds the admin token")


def test_dockyard_runs_on_kubernetes_and_provisions_a_workspace(
    deployed: Path, kubeconfig: str, api: kubernetes.client.ApiClient
) -> None:
    for kind, name in (("statefulset", "postgres"), ("deployment", "dockyard-server"),
                       ("deployment", "dockyard-provisioner")):  # fmt: skip
        kubectl(
            kubeconfig, "-n", NAMESPACE, "rollout", "status", f"{kind}/{name}", "--timeout=420s", timeout=480
        )
    servers = _ready_pods(api, "server")
    assert len(servers) == 2, [p.metadata.name for p in servers]
    assert len(_ready_pods(api, "provisioner")) == 1

    # Least privilege: the servers' account works in the workspace namespace, and nowhere else.
    assert can_i(kubeconfig, "create", "pods", WORKSPACES) == "yes"
    assert can_i(kubeconfig, "get", "secrets", WORKSPACES) == "yes"
    assert can_i(kubeconfig, "list", "secrets", "default") == "no"
    assert can_i(kubeconfig, "list", "secrets", NAMESPACE) == "no"
    assert can_i(kubeconfig, "create", "pods", NAMESPACE) == "no"
    assert can_i(kubeconfig, "create", "deployments.apps", WORKSPACES) == "no"

    token = _admin_token(kubeconfig, servers)
    first, second = (Client(f"http://{p.status.pod_ip}:3000", token) for p in servers)
    with first, second:
        report = first.doctor()
        assert (report.runtime, report.runtime_ok, report.runtime_error) == ("kubernetes", True, "")
        created = first.create_workspace(m.CreateWorkspaceRequest(template="base", name="on-k8s"))
        ws = second.get_workspace(created.id, wait="ready", timeout=240)
        assert ws.status == m.WorkspaceStatus.RUNNING, ws.status_reason
        assert ws.agent is not None
        assert ws.agent.lifecycle == m.AgentLifecycle.READY, ws.agent

        # The provisioner made the pod in the workspace namespace; its agent dialled the Service.
        core = kubernetes.client.CoreV1Api(api)
        # Ready comes with the agent's hello; the kubelet reports Running at its next relist, a moment later.
        deadline = time.monotonic() + 30
        while (
            pod := core.read_namespaced_pod(manifests.pod_name(ws.id), WORKSPACES)
        ).status.phase != "Running":
            assert pod.status.phase == "Pending", pod.status
            assert time.monotonic() < deadline, pod.status
            time.sleep(0.2)
        # Its objects carry the configured deployment id, and its network policy admits exactly the server
        # pods as the manifests label them.
        assert pod.metadata.labels[manifests.LABEL_DEPLOYMENT] == DEPLOYMENT
        policy = kubernetes.client.NetworkingV1Api(api).read_namespaced_network_policy(
            manifests.policy_name(ws.id), WORKSPACES
        )
        admitted = policy.spec.ingress[0]._from[0].pod_selector.match_labels
        assert admitted == {manifests.LABEL_COMPONENT: "server", manifests.LABEL_DEPLOYMENT: DEPLOYMENT}
        assert all(admitted.items() <= p.metadata.labels.items() for p in servers)
        # One replica holds the agent's link; an exec through either reaches it (the other relays).
        for client in (first, second):
            ran = client.exec(ws.id, m.ExecRequest(command="id -un; echo $DOCKYARD_URL; hostname"))  # type: ignore[arg-type]
            assert (ran.exit_code, ran.stdout.split()) == (0, ["dev", "http://10.254.0.240", "on-k8s"]), ran

        first.delete_workspace(ws.id)
        deleted = second.get_workspace(ws.id, wait="done", timeout=180)
        assert deleted.status == m.WorkspaceStatus.DELETED, deleted.status_reason
        selector = f"{manifests.LABEL_WORKSPACE}={ws.id}"
        assert core.list_namespaced_pod(WORKSPACES, label_selector=selector).items == []
        assert core.list_namespaced_persistent_volume_claim(WORKSPACES, label_selector=selector).items == []
        assert core.list_persistent_volume(label_selector=selector).items == []
        assert core.list_namespaced_secret(WORKSPACES, label_selector=selector).items == []
        # The server is not the node's host here, so the home's folder on the node stays (docs/KUBERNETES.md).
        home = VOLUMES / manifests.volume_name(WORKSPACES, ws.id)
        assert home.is_dir()
        shutil.rmtree(home)
