"""A real Kubernetes cluster for tests marked `kubernetes` (scripts/kubernetes.sh up prints its kubeconfig).

The tests skip unless DOCKYARD_KUBECONFIG names a kubeconfig, and fail instead when DOCKYARD_REQUIRE_KUBERNETES=1
(scripts/test.sh sets both once its cluster is up). Each session works in a namespace of its own and removes it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import kubernetes.client
import pytest
from kubernetes.client.exceptions import ApiException

from dockyard.runtimes.kubernetes import cluster
from dockyard.runtimes.kubernetes.options import KubernetesOptions
from dockyard.runtimes.kubernetes.runtime import KubernetesRuntime

BASE_IMAGE = "dockyard/base:bookworm"


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    path = os.environ.get("DOCKYARD_KUBECONFIG", "")
    if not path or not Path(path).is_file():
        why = f"DOCKYARD_KUBECONFIG is {'unset' if not path else f'{path}, which does not exist'}"
        if os.environ.get("DOCKYARD_REQUIRE_KUBERNETES") == "1":
            pytest.fail(f"no Kubernetes cluster, but DOCKYARD_REQUIRE_KUBERNETES=1: {why}")
        pytest.skip(f"no Kubernetes cluster ({why}; run `bash scripts/kubernetes.sh up`)")
    return path


@pytest.fixture(scope="session")
def api(kubeconfig: str) -> Iterator[kubernetes.client.ApiClient]:
    client = cluster.client(kubeconfig)
    yield client
    client.close()


@pytest.fixture(scope="session")
def namespace(api: kubernetes.client.ApiClient) -> Iterator[str]:
    name = f"dockyard-test-{uuid.uuid4().hex[:8]}"
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespace(cluster.body({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
    yield name
    try:
        core.delete_namespace(name)
    except ApiException as exc:
        if exc.status != 404:
            raise


@pytest.fixture
def options(kubeconfig: str, namespace: str, tmp_path: Path) -> KubernetesOptions:
    return KubernetesOptions(
        kubeconfig=kubeconfig,
        namespace=namespace,
        local_volume_root=str(tmp_path / "volumes"),
        host_paths=True,
        ready_timeout=90,
        # No registry can be reached here: a missing image must fail without the engine trying to pull.
        image_pull_policy="Never",
        # The tests check the policy objects egress `none` and `allowlist` make; the test cluster's network
        # plugin stores them without enforcing them (docs/KUBERNETES.md).
        policies_enforced=True,
    )


@pytest.fixture
def k8s(options: KubernetesOptions) -> Iterator[KubernetesRuntime]:
    runtime = KubernetesRuntime(options, deployment=f"test-{uuid.uuid4().hex[:8]}")
    yield runtime
    for resource in runtime.managed_resources():
        runtime.remove_resource(resource)
    runtime.close()
