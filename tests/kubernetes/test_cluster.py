"""The Kubernetes runtime against a real cluster: pods, homes, policies, failures and the checks at start."""

from __future__ import annotations

import dataclasses
import time
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.stream
import pytest

from dockyard.runtimes.base import ContainerState, RuntimeFailure, RuntimeUnavailable
from dockyard.runtimes.kubernetes import manifests, pods
from dockyard.runtimes.kubernetes.options import KubernetesOptions
from dockyard.runtimes.kubernetes.runtime import KubernetesRuntime
from dockyard.runtimes.plan import Egress, NetworkPolicy, Resources, WorkspacePlan
from tests.kubernetes.conftest import BASE_IMAGE

pytestmark = [pytest.mark.kubernetes, pytest.mark.timeout(300)]


def spec(workspace_id: str | None = None, **overrides: Any) -> WorkspacePlan:
    """A plan with small limits; `cpu`, `memory_bytes`, `egress` and `env` go where the plan keeps them."""
    workspace_id = workspace_id or uuid.uuid4().hex[:12]
    return WorkspacePlan(
        workspace_id=workspace_id,
        name=f"ws-{workspace_id}",
        owner="alice",
        owner_id="u1",
        template="tmpl",
        build_id="b1",
        image=overrides.pop("image", BASE_IMAGE),
        resources=Resources(
            cpu=overrides.pop("cpu", 0.5), memory_bytes=overrides.pop("memory_bytes", 256 * 2**20)
        ),
        network=NetworkPolicy(egress=Egress(overrides.pop("egress", "none"))),
        **overrides,
    )


def altered(plan: WorkspacePlan, **overrides: Any) -> WorkspacePlan:
    values = {"image": plan.image, "cpu": plan.resources.cpu, "memory_bytes": plan.resources.memory_bytes}
    values.update(egress=plan.network.egress.value, env=plan.env, command=plan.command)
    return spec(plan.workspace_id, **{**values, **overrides})


def sh(k8s: KubernetesRuntime, workspace_id: str, command: str) -> str:
    """Run a command in the workspace container through the API server and the kubelet (kubectl exec's path)."""
    output: str = kubernetes.stream.stream(
        k8s.core.connect_get_namespaced_pod_exec,
        manifests.pod_name(workspace_id),
        k8s.options.namespace,
        container="workspace",
        command=["/bin/sh", "-c", command],
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
    )
    return output


def labelled(k8s: KubernetesRuntime, workspace_id: str) -> list[tuple[str, str]]:
    return sorted((r.kind, r.name) for r in k8s.managed_resources() if r.workspace_id == workspace_id)


def test_start_stop_start_keeps_home_and_delete_leaves_nothing(k8s: KubernetesRuntime) -> None:
    workspace = spec(env={"GREETING": "hello"})
    log: list[str] = []
    observation = k8s.start(workspace, log.append)
    assert observation.state == ContainerState.RUNNING, log
    assert observation.address
    assert sh(
        k8s, workspace.workspace_id, "id -u; echo $HOME $GREETING; echo kept > ~/notes.txt; cat ~/notes.txt"
    ) == ("1000\n/home/dev hello\nkept\n")
    # Non-root with nothing to escalate to: no capabilities, and no_new_privs set by the kubelet.
    status = sh(k8s, workspace.workspace_id, "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status")
    assert status.split() == ["CapEff:", "0000000000000000", "NoNewPrivs:", "1", "Seccomp:", "2"]
    name = manifests.pod_name(workspace.workspace_id)
    claim = manifests.claim_name(workspace.workspace_id)
    policy = manifests.policy_name(workspace.workspace_id)
    volume = manifests.volume_name(k8s.options.namespace, workspace.workspace_id)
    assert labelled(k8s, workspace.workspace_id) == [
        ("networkpolicy", policy),
        ("persistentvolume", volume),
        ("persistentvolumeclaim", claim),
        ("pod", name),
    ]

    k8s.stop(workspace.workspace_id, log.append)
    assert labelled(k8s, workspace.workspace_id) == [
        ("networkpolicy", policy),
        ("persistentvolume", volume),
        ("persistentvolumeclaim", claim),
    ]
    stopped = k8s.observe(workspace.workspace_id)
    assert (stopped.state, stopped.detail) == (ContainerState.STOPPED, "stopped: no pod, the home is kept")
    # A stop Dockyard asked for is not reported as a deletion by someone else.
    assert workspace.workspace_id not in k8s.observe_all()

    again = k8s.start(workspace, log.append)
    assert again.state == ContainerState.RUNNING
    assert sh(k8s, workspace.workspace_id, "cat ~/notes.txt") == "kept\n"

    k8s.delete(workspace.workspace_id, log.append)
    assert labelled(k8s, workspace.workspace_id) == []
    assert not (Path(k8s.options.local_volume_root) / volume).exists()


def _pod_uid(k8s: KubernetesRuntime, workspace_id: str) -> str:
    pod = pods.read(k8s.core, manifests.pod_name(workspace_id), namespace=k8s.options.namespace)
    assert pod is not None
    return str(pod["metadata"]["uid"])


def test_a_second_start_keeps_the_running_pod(k8s: KubernetesRuntime) -> None:
    workspace = spec()
    k8s.start(workspace, lambda line: None)
    uid = _pod_uid(k8s, workspace.workspace_id)
    log: list[str] = []
    assert k8s.start(workspace, log.append).state == ContainerState.RUNNING
    assert f"Pod {manifests.pod_name(workspace.workspace_id)} exists already" in log
    assert _pod_uid(k8s, workspace.workspace_id) == uid
    # A changed spec replaces it.
    changed = altered(workspace, env={"NEW": "1"})
    k8s.start(changed, log.append)
    assert any("its configuration changed" in line for line in log)
    assert sh(k8s, workspace.workspace_id, "echo $NEW") == "1\n"


def test_network_policy_objects(k8s: KubernetesRuntime) -> None:
    """Stored as written; this test cluster has no policy-enforcing network plugin (docs/KUBERNETES.md)."""
    workspace = spec(egress="all")
    k8s.start(workspace, lambda line: None)
    networking = kubernetes.client.NetworkingV1Api(k8s.api)
    stored = networking.read_namespaced_network_policy(
        manifests.policy_name(workspace.workspace_id), k8s.options.namespace
    )
    assert stored.spec.pod_selector.match_labels == {"dockyard.dev/workspace": workspace.workspace_id}
    assert stored.spec.policy_types == ["Ingress", "Egress"]
    assert [p.pod_selector.match_labels for p in stored.spec.ingress[0]._from] == [
        {"dockyard.dev/component": "server", "dockyard.dev/deployment": k8s.deployment}
    ]
    assert [rule.to[0].ip_block.cidr for rule in stored.spec.egress[1:]] == ["0.0.0.0/0", "::/0"]
    # A new egress setting replaces the policy in place.
    k8s.start(altered(workspace, egress="none"), lambda line: None)
    stored = networking.read_namespaced_network_policy(
        manifests.policy_name(workspace.workspace_id), k8s.options.namespace
    )
    assert len(stored.spec.egress) == 1


def test_unschedulable_fails_the_start_with_the_schedulers_reason(k8s: KubernetesRuntime) -> None:
    workspace = spec(cpu=256.0)
    started = time.monotonic()
    with pytest.raises(RuntimeFailure) as info:
        k8s.start(workspace, lambda line: None)
    assert info.value.message == (
        f"Pod {manifests.pod_name(workspace.workspace_id)} cannot start: "
        "unschedulable: 0/1 nodes are available: 1 Insufficient cpu."
    )
    assert time.monotonic() - started < 60


def test_an_image_that_cannot_be_pulled_fails_the_start(k8s: KubernetesRuntime) -> None:
    workspace = spec(image="dockyard/no-such-image:1")
    with pytest.raises(RuntimeFailure) as info:
        k8s.start(workspace, lambda line: None)
    assert info.value.message == (
        f"Pod {manifests.pod_name(workspace.workspace_id)} cannot start: ErrImageNeverPull: "
        'Container image "dockyard/no-such-image:1" is not present with pull policy of Never'
    )


def test_a_pod_deleted_by_someone_else_is_observed_with_its_reason(k8s: KubernetesRuntime) -> None:
    workspace = spec()
    k8s.start(workspace, lambda line: None)
    k8s.core.delete_namespaced_pod(manifests.pod_name(workspace.workspace_id), k8s.options.namespace)
    deadline = time.monotonic() + 90  # the grace period, on a loaded machine
    while True:
        seen = k8s.observe_all().get(workspace.workspace_id)
        if seen is not None and seen.state == ContainerState.MISSING:
            break
        assert time.monotonic() < deadline, seen
        time.sleep(0.2)
    assert seen.detail == "the pod was deleted outside Dockyard"


def test_a_workload_killed_for_memory_is_observed_as_oom(k8s: KubernetesRuntime) -> None:
    workspace = spec(
        memory_bytes=64 * 2**20,
        command=("python3", "-c", "import time; time.sleep(2); b = bytearray(256 * 2**20); time.sleep(60)"),
    )
    assert k8s.start(workspace, lambda line: None).state == ContainerState.RUNNING
    deadline = time.monotonic() + 60
    while True:
        seen = k8s.observe_all().get(workspace.workspace_id)
        if seen is not None and seen.state != ContainerState.RUNNING:
            break
        assert time.monotonic() < deadline, seen
        time.sleep(0.2)
    assert (seen.state, seen.detail) == (ContainerState.OOM_KILLED, "killed: out of memory")


# --- what `dockyard server` and `dockyard doctor` say about a cluster they cannot use ---------------------------


def test_a_namespace_that_does_not_exist_is_named(options: KubernetesOptions) -> None:
    with closing(
        KubernetesRuntime(dataclasses.replace(options, namespace="no-such-namespace"), deployment="d")
    ) as runtime:
        with pytest.raises(RuntimeUnavailable) as info:
            runtime.ping()
        assert info.value.message.startswith(
            "Kubernetes namespace no-such-namespace does not exist at https://127.0.0.1:"
        )
        # A build on such a server (or after the namespace went) fails with the same words, not a 404.
        with pytest.raises(RuntimeUnavailable) as info:
            runtime.start(spec(), lambda line: None)
        assert info.value.message.startswith(
            "Kubernetes namespace no-such-namespace does not exist at https://127.0.0.1:"
        )


def test_rbac_that_forbids_pods_is_named(options: KubernetesOptions) -> None:
    limited = str(Path(options.kubeconfig or "").with_name("limited.kubeconfig"))
    if not Path(limited).is_file():
        pytest.skip("the cluster has no identity without permissions (scripts/kubernetes.sh makes one)")
    with closing(
        KubernetesRuntime(dataclasses.replace(options, kubeconfig=limited), deployment="d")
    ) as runtime:
        with pytest.raises(RuntimeUnavailable) as info:
            runtime.ping()
        assert info.value.message == (
            "RBAC forbids this server to create pods, delete pods, get pods, list pods, watch pods, "
            "create persistentvolumeclaims, delete persistentvolumeclaims, get persistentvolumeclaims, "
            "list persistentvolumeclaims, create secrets, delete secrets, get secrets, list secrets, update secrets, "
            "create configmaps, create networkpolicies, delete networkpolicies, get networkpolicies, "
            "list networkpolicies, update networkpolicies, create persistentvolumes, delete persistentvolumes, "
            f"get persistentvolumes, list persistentvolumes in namespace {options.namespace}."
        )
        # A build on such a server fails with the API's own words.
        with pytest.raises(RuntimeUnavailable) as info:
            runtime.start(spec(), lambda line: None)
        assert info.value.message.startswith("RBAC forbids it: ")
        assert "forbidden" in info.value.message


def test_an_api_that_does_not_answer_is_named(tmp_path: Path, options: KubernetesOptions) -> None:
    text = Path(options.kubeconfig or "").read_text()
    dead = tmp_path / "dead.kubeconfig"
    dead.write_text(text.replace(text.split("server: ")[1].split("\n")[0], "https://127.0.0.1:9"))
    with closing(
        KubernetesRuntime(dataclasses.replace(options, kubeconfig=str(dead)), deployment="d")
    ) as runtime:
        with pytest.raises(RuntimeUnavailable) as info:
            runtime.ping()
        assert info.value.message == "Kubernetes API unreachable at https://127.0.0.1:9: Connection refused"
        # A build on such a server fails with the same words.
        with pytest.raises(RuntimeUnavailable) as info:
            runtime.start(spec(), lambda line: None)
        assert info.value.message == "Kubernetes API unreachable at https://127.0.0.1:9: Connection refused"
