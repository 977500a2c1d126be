"""The pure half of the Kubernetes runtime: workspace specs as objects, pods as observations, overlays."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, cast

import pytest

from dockyard.lifecycle import reconcile
from dockyard.runtimes.base import ContainerState, RuntimeFailure
from dockyard.runtimes.kubernetes import manifests, overlay, pods, states
from dockyard.runtimes.kubernetes.options import KubernetesOptions
from dockyard.runtimes.kubernetes.spec import AgentFolders, BindMount, WorkspaceSpec, from_plan
from dockyard.runtimes.kubernetes.watch import PodCache
from dockyard.runtimes.plan import AgentLink, AgentPlan, Egress, LinkKind, WorkspacePlan
from dockyard.tunnel.door import LinkDoor

DEPLOYMENT = "dep-1"


def spec(**overrides: Any) -> WorkspaceSpec:
    values: dict[str, Any] = {
        "workspace_id": "0f6c1b2e-1111-4222-8333-944455556666",
        "name": "My_Workspace",
        "owner": "alice@example",
        "owner_id": "u1",
        "template": "python",
        "build_id": "b1",
        "image": "dockyard/base:bookworm",
        "cpu": 2.0,
        "memory_bytes": 2 * 2**30,
        "env": {"A": "1"},
        **overrides,
    }
    return WorkspaceSpec(**values)


def test_pod_is_non_root_without_capabilities_or_escalation() -> None:
    pod = manifests.pod(spec(), KubernetesOptions(namespace="ws"), deployment=DEPLOYMENT)
    assert pod["metadata"]["name"] == "dockyard-ws-0f6c1b2e-1111-4222-8333-944455556666"
    assert pod["metadata"]["namespace"] == "ws"
    assert pod["metadata"]["labels"] == {
        "dockyard.dev/managed": "true",
        "dockyard.dev/workspace": "0f6c1b2e-1111-4222-8333-944455556666",
        "dockyard.dev/owner": "alice-example",
        "dockyard.dev/template": "python",
        "dockyard.dev/deployment": DEPLOYMENT,
    }
    body = pod["spec"]
    assert body["automountServiceAccountToken"] is False
    assert body["hostname"] == "my-workspace"
    assert body["restartPolicy"] == "Never"
    assert body["securityContext"]["runAsNonRoot"] is True
    assert body["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = body["containers"]
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["resources"] == {
        "limits": {"cpu": "2000m", "memory": str(2 * 2**30)},
        "requests": {"cpu": "500m", "memory": str(2**29)},
    }
    assert {"name": "A", "value": "1"} in container["env"]
    assert {"name": "HOME", "value": "/home/dev"} in container["env"]
    assert container["volumeMounts"] == [{"name": "home", "mountPath": "/home/dev"}]
    # The local storage class's hostPath home is handed to the user by a CHOWN-only init container.
    (init,) = body["initContainers"]
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    assert init["securityContext"]["allowPrivilegeEscalation"] is False
    assert "runtimeClassName" not in body


def test_gpus_runtime_class_and_pull_secrets() -> None:
    options = KubernetesOptions(
        runtime_class="gvisor", image_pull_secrets=("regcred",), storage_class="fast", request_fraction=1.0
    )
    pod = manifests.pod(spec(gpu=2), options, deployment=DEPLOYMENT)
    resources = pod["spec"]["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "2"
    assert resources["requests"] == resources["limits"]
    assert pod["spec"]["runtimeClassName"] == "gvisor"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert "initContainers" not in pod["spec"]


def test_host_folders_are_refused_unless_the_pods_run_on_this_host() -> None:
    mounted = spec(mounts=(BindMount("/srv/agent", "/run/dockyard"),))
    with pytest.raises(ValueError, match="mounts no host folders"):
        manifests.pod(mounted, KubernetesOptions(), deployment=DEPLOYMENT)
    pod = manifests.pod(mounted, KubernetesOptions(host_paths=True), deployment=DEPLOYMENT)
    assert pod["spec"]["volumes"][1] == {
        "name": "host-0",
        "hostPath": {"path": "/srv/agent", "type": "Directory"},
    }
    assert pod["spec"]["containers"][0]["volumeMounts"][1] == {
        "name": "host-0",
        "mountPath": "/run/dockyard",
        "readOnly": True,
    }


def test_a_network_agent_comes_by_config_map_and_secret_without_host_folders() -> None:
    plan = WorkspacePlan(
        workspace_id="w1",
        name="w",
        owner="alice",
        owner_id="u1",
        template="t",
        build_id="b1",
        image="img",
        agent=AgentPlan(link=AgentLink(kind=LinkKind.NETWORK, url="http://10.0.0.5:3000")),
    )
    workspace = from_plan(plan, AgentFolders(Path("/srv/agent"), Path("/srv/links")))
    assert (workspace.mounts, workspace.agent_projected) == ((), True)
    assert workspace.env["DOCKYARD_URL"] == "http://10.0.0.5:3000"
    assert workspace.env["DOCKYARD_AGENT_TOKEN_FILE"] == "/run/dockyard/link/token"
    program = manifests.agent_program(
        {
            "agent.py": (b"print(1)\n", 0o444),
            "bin/dockyard-agent": (b"#!/bin/sh\n", 0o555),
            "x.pyc": (b"\xff", 0o444),
        }
    )
    # Named by content: another version of the agent is another ConfigMap.
    assert (
        program.name
        == manifests.agent_program(
            {
                "agent.py": (b"print(1)\n", 0o444),
                "bin/dockyard-agent": (b"#!/bin/sh\n", 0o555),
                "x.pyc": (b"\xff", 0o444),
            }
        ).name
    )
    assert program.name != manifests.agent_program({"agent.py": (b"print(2)\n", 0o444)}).name
    config_map = manifests.agent_config_map(program, KubernetesOptions(namespace="ws"), deployment=DEPLOYMENT)
    assert config_map["data"] == {"agent.py": "print(1)\n", "bin--dockyard-agent": "#!/bin/sh\n"}
    assert config_map["binaryData"] == {"x.pyc": "/w=="}
    assert config_map["metadata"]["labels"] == {
        "dockyard.dev/managed": "true",
        "dockyard.dev/deployment": DEPLOYMENT,
        "dockyard.dev/component": "agent",
    }
    secret = manifests.agent_secret(
        workspace, "dya_w1_abc\n", KubernetesOptions(namespace="ws"), deployment=DEPLOYMENT
    )
    assert (secret["metadata"]["name"], secret["data"]) == (
        "dockyard-agent-w1",
        {"token": "ZHlhX3cxX2FiYw=="},
    )
    assert secret["metadata"]["labels"]["dockyard.dev/workspace"] == "w1"

    with pytest.raises(ValueError, match="ConfigMap is needed"):
        manifests.pod(workspace, KubernetesOptions(), deployment=DEPLOYMENT)
    pod = manifests.pod(workspace, KubernetesOptions(), deployment=DEPLOYMENT, agent_files=program)
    volume = pod["spec"]["volumes"][1]
    assert volume == {
        "name": "dockyard-agent",
        "projected": {
            "defaultMode": 0o444,
            "sources": [
                {
                    "configMap": {
                        "name": program.name,
                        "items": [
                            {"key": "agent.py", "path": "agent.py", "mode": 0o444},
                            {"key": "bin--dockyard-agent", "path": "bin/dockyard-agent", "mode": 0o555},
                            {"key": "x.pyc", "path": "x.pyc", "mode": 0o444},
                        ],
                    }
                },
                {
                    "secret": {
                        "name": "dockyard-agent-w1",
                        "items": [{"key": "token", "path": "link/token", "mode": 0o400}],
                    }
                },
            ],
        },
    }
    assert not any("hostPath" in v for v in pod["spec"]["volumes"])
    assert pod["spec"]["containers"][0]["volumeMounts"][1] == {
        "name": "dockyard-agent",
        "mountPath": "/run/dockyard",
        "readOnly": True,
    }
    # The token file is the user's through the pod's fsGroup (its own group), nobody else's.
    assert pod["spec"]["securityContext"]["fsGroup"] == 1000


@pytest.mark.parametrize(
    ("offered", "egress", "expected"),
    [
        ({LinkKind.NETWORK}, Egress.NONE, LinkKind.NETWORK),
        ({LinkKind.NETWORK}, Egress.ALL, LinkKind.NETWORK),
        ({LinkKind.NETWORK, LinkKind.UNIX_SOCKET}, Egress.NONE, LinkKind.UNIX_SOCKET),
        ({LinkKind.NETWORK, LinkKind.UNIX_SOCKET}, Egress.ALL, LinkKind.NETWORK),
    ],
)
def test_a_runtime_that_offers_only_the_network_link_gets_it_whatever_the_egress(
    offered: set[LinkKind], egress: Egress, expected: LinkKind
) -> None:
    door = LinkDoor(None, None, url="http://10.0.0.5:3000")  # type: ignore[arg-type]
    link = door.link(frozenset(offered), egress=egress)
    assert link is not None
    assert link.kind == expected


def test_the_local_volume_is_pre_bound_to_its_claim_by_uid() -> None:
    options = KubernetesOptions(namespace="ws")
    claim = manifests.claim(spec(disk_bytes=2**30), options, deployment=DEPLOYMENT)
    volume = manifests.local_volume(spec(disk_bytes=2**30), options, deployment=DEPLOYMENT, claim_uid="u-1")
    assert claim["spec"]["resources"]["requests"]["storage"] == str(2**30)
    # The claim names no volume: the controller binds a claim naming a volume it has not seen yet only at its
    # resync, and a volume pre-bound by uid at once (home.py).
    assert "volumeName" not in claim["spec"]
    assert volume["spec"]["claimRef"] == {"namespace": "ws", "name": claim["metadata"]["name"], "uid": "u-1"}
    assert volume["spec"]["hostPath"]["path"].startswith("/var/lib/dockyard-volumes/dockyard-home-")
    assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Retain"


@pytest.mark.parametrize(
    ("egress", "allow", "expected"),
    [
        ("none", (), []),
        (
            "all",
            (),
            [{"cidr": "0.0.0.0/0", "except": ["10.244.0.0/16", "10.254.0.0/24"]}, {"cidr": "::/0"}],
        ),
        (
            "allowlist",
            ("192.0.2.7", "198.51.100.0/24"),
            [{"cidr": "192.0.2.7/32"}, {"cidr": "198.51.100.0/24"}],
        ),
    ],
)
def test_network_policy_egress(egress: str, allow: tuple[str, ...], expected: list[dict[str, Any]]) -> None:
    policy = manifests.network_policy(
        spec(egress=egress),
        KubernetesOptions(),
        deployment=DEPLOYMENT,
        allow=allow,
        cluster_cidrs=("10.244.0.0/16", "10.254.0.0/24"),
    )
    body = policy["spec"]
    assert body["podSelector"] == {"matchLabels": {"dockyard.dev/workspace": spec().workspace_id}}
    assert body["policyTypes"] == ["Ingress", "Egress"]
    dockyard = {
        "podSelector": {
            "matchLabels": {"dockyard.dev/component": "server", "dockyard.dev/deployment": DEPLOYMENT}
        },
        "namespaceSelector": {},
    }
    # Ingress only from Dockyard's own pods: no other workspace (pod-to-pod) reaches it.
    assert body["ingress"] == [{"from": [dockyard]}]
    assert body["egress"][0] == {"to": [dockyard]}
    assert [rule["to"][0]["ipBlock"] for rule in body["egress"][1:]] == expected


def test_an_allow_list_of_host_names_is_refused() -> None:
    with pytest.raises(ValueError, match=r"'pypi\.org' is not an address or CIDR"):
        manifests.network_policy(
            spec(egress="allowlist"), KubernetesOptions(), deployment=DEPLOYMENT, allow=("pypi.org",)
        )


# --- observations ---------------------------------------------------------------------------------------------


def _pod(phase: str, *, container: dict[str, Any] | None = None, **status: Any) -> dict[str, Any]:
    statuses = [{"name": "workspace", **(container or {})}]
    return {"metadata": {"name": "p"}, "status": {"phase": phase, "containerStatuses": statuses, **status}}


def test_observations_of_pods() -> None:
    running = states.observe("w", _pod("Running", container={"state": {"running": {}}}, podIP="172.17.0.5"))
    assert (running.state, running.address) == (ContainerState.RUNNING, "172.17.0.5")
    oom = states.observe(
        "w", _pod("Failed", container={"state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}})
    )
    assert (oom.state, oom.detail) == (ContainerState.OOM_KILLED, "killed: out of memory")
    evicted = states.observe(
        "w", _pod("Failed", reason="Evicted", message="The node was low on resource: memory.")
    )
    assert (evicted.state, evicted.detail) == (
        ContainerState.EXITED,
        "evicted: The node was low on resource: memory.",
    )
    gone = states.observe("w", None, gone="the pod was deleted outside Dockyard")
    assert (gone.state, gone.detail) == (ContainerState.MISSING, "the pod was deleted outside Dockyard")
    # Pending is on its way (the kubelet may not have reported a started pod yet); Unknown is not running.
    creating = states.observe(
        "w", _pod("Pending", container={"state": {"waiting": {"reason": "ContainerCreating"}}})
    )
    assert (creating.state, creating.detail) == (ContainerState.STARTING, "pending: Pending")
    lost = states.observe("w", _pod("Unknown"))
    assert (lost.state, lost.detail) == (ContainerState.STOPPED, "Unknown: not running")


def test_a_started_pod_the_kubelet_still_reports_pending_has_not_drifted() -> None:
    """The agent's hello ends a start before the kubelet's next relist reports the pod running: a reconciler
    pass in that window once failed a ready workspace (as "stopped outside Dockyard") until its next pass."""
    creating = _pod("Pending", container={"state": {"waiting": {"reason": "ContainerCreating"}}})
    assert reconcile.drift_reason(states.observe("w", creating)) is None
    assert (
        reconcile.drift_reason(states.observe("w", _pod("Unknown")))
        == "the container was stopped outside Dockyard"
    )


def test_unschedulable_and_image_errors_are_final_with_the_clusters_reason() -> None:
    unschedulable = {
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/1 nodes are available: 1 Insufficient cpu.",
                }
            ],
        }
    }
    assert (
        states.start_failure(unschedulable) == "unschedulable: 0/1 nodes are available: 1 Insufficient cpu."
    )
    pull = _pod(
        "Pending",
        container={
            "state": {"waiting": {"reason": "ErrImagePull", "message": "pull access denied for nope"}}
        },
    )
    assert states.start_failure(pull) == "ErrImagePull: pull access denied for nope"
    creating = _pod("Pending", container={"state": {"waiting": {"reason": "ContainerCreating"}}})
    assert states.start_failure(creating) is None


# --- template overlays ----------------------------------------------------------------------------------------


def test_an_overlay_adds_env_mounts_sidecars_and_scheduling() -> None:
    extra = {
        "nodeSelector": {"disk": "ssd"},
        "tolerations": [{"key": "gpu", "operator": "Exists"}],
        "volumes": [{"name": "cache", "emptyDir": {}}],
        "containers": [
            {
                "name": "workspace",
                "env": [{"name": "B", "value": "2"}],
                "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
            },
            {"name": "db", "image": "postgres:15"},
        ],
    }
    assert overlay.validate(extra) == []
    pod = manifests.pod(spec(), KubernetesOptions(), deployment=DEPLOYMENT, overlay=extra)
    body = pod["spec"]
    assert body["nodeSelector"] == {"disk": "ssd"}
    assert [c["name"] for c in body["containers"]] == ["workspace", "db"]
    workspace = body["containers"][0]
    assert {"name": "B", "value": "2"} in workspace["env"]
    assert {"name": "A", "value": "1"} in workspace["env"]
    assert [m["mountPath"] for m in workspace["volumeMounts"]] == ["/home/dev", "/cache"]
    assert workspace["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert [v["name"] for v in body["volumes"]] == ["home", "cache"]
    # The hash changes with the overlay, so a start replaces a pod made from another version.
    plain = manifests.pod(spec(), KubernetesOptions(), deployment=DEPLOYMENT)
    assert (
        plain["metadata"]["annotations"]["dockyard.dev/config-hash"]
        != pod["metadata"]["annotations"]["dockyard.dev/config-hash"]
    )


def test_overlays_that_loosen_isolation_are_refused_unless_allowed() -> None:
    extra = {
        "hostNetwork": True,
        "containers": [
            {"name": "workspace", "image": "other"},
            {"name": "dind", "image": "docker:dind", "securityContext": {"privileged": True}, "tty": True},
        ],
        "volumes": [{"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}}],
    }
    assert overlay.validate(extra) == [
        (
            "kubernetes.pod.hostNetwork",
            "loosens the workspace's isolation; allowed: affinity, containers, dnsConfig, initContainers, "
            "nodeSelector, priorityClassName, runtimeClassName, tolerations, topologySpreadConstraints, volumes",
        ),
        ("kubernetes.pod.containers[0].image", "the workspace container's is set by Dockyard"),
        ("kubernetes.pod.containers[1].tty", "is not a container field a template may set"),
        (
            "kubernetes.pod.containers[1].securityContext.privileged",
            "privileged containers, root and added capabilities need an admin's consent",
        ),
        ("kubernetes.pod.volumes[0].hostPath", "host folders need an admin's consent"),
    ]
    allowed = overlay.validate(extra, allow_privileged=True)
    assert [field for field, _ in allowed] == [
        "kubernetes.pod.hostNetwork",
        "kubernetes.pod.containers[0].image",
        "kubernetes.pod.containers[1].tty",
    ]


def _cached(pod: dict[str, Any]) -> PodCache:
    cache = PodCache()
    pod["metadata"] = {"name": "p", "uid": "u1", "labels": {manifests.LABEL_WORKSPACE: "w"}}
    cache.replace([pod])
    return cache


def test_a_start_returns_on_its_agent_before_the_kubelet_reports_running_and_failures_still_win() -> None:
    creating = _pod(
        "Pending", container={"state": {"waiting": {"reason": "ContainerCreating"}}}, podIP="172.17.0.9"
    )
    started, lines = threading.Event(), []
    threading.Timer(0.1, started.set).start()
    began = time.monotonic()
    observation = pods.wait_running(
        cast(Any, None), _cached(creating), "w", uid="u1", namespace="n", timeout=5,
        log=lines.append, started=started,
    )  # fmt: skip
    assert time.monotonic() - began < 1.0
    assert (observation.state, observation.detail, observation.address) == (
        ContainerState.RUNNING,
        "running (its agent connected)",
        "172.17.0.9",
    )
    assert lines[-1] == "Pod dockyard-ws-w is running on ? (its agent connected)"
    # The cluster's reason fails the start even when an agent was heard (one from a pod being replaced).
    pull = _pod("Pending", container={"state": {"waiting": {"reason": "ErrImagePull", "message": "denied"}}})
    with pytest.raises(RuntimeFailure) as failed:
        pods.wait_running(
            cast(Any, None), _cached(pull), "w", uid="u1", namespace="n", timeout=5,
            log=lines.append, started=started,
        )  # fmt: skip
    assert failed.value.message == "Pod dockyard-ws-w cannot start: ErrImagePull: denied"
    # Without the agent's word the start waits for the kubelet's report, up to its timeout.
    with pytest.raises(RuntimeFailure) as late:
        pods.wait_running(
            cast(Any, None), _cached(creating), "w", uid="u1", namespace="n", timeout=0.3, log=lines.append
        )
    assert late.value.message.startswith("Pod dockyard-ws-w did not run within 0.3 s")
