"""Provisioning on Kubernetes: Dockyard's runtime against bare pods of the same image, with the same client.

    DOCKYARD_KUBECONFIG=$(bash scripts/kubernetes.sh up | tail -n 1) \\
        .venv/bin/python bench/provision.py --runtime kubernetes [--quick]

Measured in one run, in a namespace of its own (removed at the end):
- bare: a pod of `dockyard/base:bookworm` running `sleep infinity`, created and waited on (watch) until Running,
  sequentially (p50) and 20 at once (wall time);
- Dockyard: `KubernetesRuntime.start` of a workspace (home claim and local volume, network policy, the
  restricted pod with its home-owner init container) until Running, sequentially (p50) and 20 at once;
- stop (pod deleted and gone, home kept) and start again (a new pod on the same claim), p50 of each.
The agent is not part of this measure (the runtime's share of a create).
- Dockyard's create -> ready through a real `dockyard server --runtime kubernetes` (livesrv.py) on the same
  namespace, with host paths (the server on the node: the agent's link is its socket, the home the server's own
  folder): a template of the same image and limits created until its agent is connected and its startup done, sequentially
  (p50) and 20 at once (wall time). The issue's figure: target ratio <= 1.5 to the bare pods.

Also a bare pod with the workspace's requests and limits (no volume, no policy), sequentially: the kubelet reports
a pod Running on its once-a-second relist, and on this cluster (kubelet 1.20, cgroup v1) a pod with any request or
limit misses the first relist, so it reads 2 s where a bare pod reads 1 s. Dockyard's ratio to it shows what is
Dockyard's own share once that kubelet cost is counted on both sides.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.watch
from livesrv import start_live_server, stop_live_server

from dockyard.runtimes.kubernetes import cluster
from dockyard.runtimes.kubernetes.options import KubernetesOptions
from dockyard.runtimes.kubernetes.runtime import KubernetesRuntime
from dockyard.runtimes.plan import Egress, NetworkPolicy, Resources, WorkspacePlan
from dockyard_sdk import Client
from dockyard_sdk import models as m

IMAGE = "dockyard/base:bookworm"


def report(line: str) -> None:
    print(line, flush=True)


def bare_pod(
    core: kubernetes.client.CoreV1Api, namespace: str, *, resources: dict[str, Any] | None = None
) -> float:
    name = f"bare-{uuid.uuid4().hex[:10]}"
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "bare"}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": IMAGE,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["sleep", "infinity"],
                    **({"resources": resources} if resources else {}),
                }
            ],
        },
    }
    started = time.perf_counter()
    core.create_namespaced_pod(namespace, cluster.body(manifest))
    watch = kubernetes.watch.Watch()
    for event in watch.stream(
        core.list_namespaced_pod, namespace, field_selector=f"metadata.name={name}", timeout_seconds=120
    ):
        if (event["raw_object"].get("status") or {}).get("phase") == "Running":
            watch.stop()
            break
    return time.perf_counter() - started


def spec(index: int) -> WorkspacePlan:
    workspace_id = f"b{uuid.uuid4().hex[:10]}"
    return WorkspacePlan(
        workspace_id=workspace_id,
        name=f"bench-{index}",
        owner="bench",
        owner_id="bench",
        template="bench",
        build_id="bench",
        image=IMAGE,
        resources=Resources(cpu=0.1, memory_bytes=128 * 2**20),
        network=NetworkPolicy(egress=Egress.NONE),
    )


STEPS: dict[str, list[float]] = {}


def dockyard_start(runtime: KubernetesRuntime, workspace: WorkspacePlan) -> float:
    started = time.perf_counter()
    observation = runtime.start(workspace, lambda line: None)
    for step, seconds in (observation.timings or {}).items():
        STEPS.setdefault(step, []).append(seconds)
    return time.perf_counter() - started


def at_once(count: int, work: Any) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(count) as pool:
        list(pool.map(work, range(count)))
    return time.perf_counter() - started


# The same image and memory as the runtime's workspaces below (spec()), and a quarter CPU: the agent starts
# inside the workspace's CPU limit (at 0.1 CPU its Python start alone takes 0.9 s), and the 31 pods of a full run
# must fit the test cluster's 2-CPU node at the default request fraction (a quarter of the limit each).
TEMPLATE = """
name: bench
image: dockyard/base:bookworm
resources: {cpu: 0.25, memory: 128Mi}
"""


def create_until_ready(client: Client, name: str) -> float:
    started = time.perf_counter()
    created = client.create_workspace(m.CreateWorkspaceRequest(template="bench", name=name))
    ready = client.get_workspace(created.id, wait="ready", timeout=300)
    if ready.agent is None or ready.agent.lifecycle != m.AgentLifecycle.READY:
        raise SystemExit(f"workspace {name} ended {ready.status}: {ready.status_reason}")
    return time.perf_counter() - started


def server_creates(
    kubeconfig: str, namespace: str, sequential: int, parallel: int
) -> tuple[list[float], float]:
    """Creates until ready through a real server on the cluster: `sequential` one by one, then `parallel` at
    once (wall time)."""
    live = start_live_server(
        subnets="10.219.0.0/16",
        extra_env={
            "DOCKYARD_RUNTIME": "kubernetes",
            "DOCKYARD_KUBECONFIG": kubeconfig,
            "DOCKYARD_KUBERNETES_NAMESPACE": namespace,
            "DOCKYARD_KUBERNETES_HOST_PATHS": "1",
            "DOCKYARD_KUBERNETES_POLICIES_ENFORCED": "1",
        },
    )
    try:
        folder = Path(tempfile.mkdtemp(prefix="dockyard-bench-k8s-"))
        (folder / "dockyard.yaml").write_text(TEMPLATE)
        live.client.create_template(folder)
        shutil.rmtree(folder, ignore_errors=True)
        create_until_ready(live.client, "warmup")
        each = [create_until_ready(live.client, f"seq-{i}") for i in range(sequential)]
        wall = at_once(parallel, lambda i: create_until_ready(live.client, f"par-{i}"))
        return each, wall
    finally:
        stop_live_server(live)


def main(quick: bool) -> int:
    kubeconfig = os.environ.get("DOCKYARD_KUBECONFIG", "")
    if not kubeconfig:
        print("error: set DOCKYARD_KUBECONFIG (bash scripts/kubernetes.sh up prints it)", file=sys.stderr)
        return 2
    sequential, parallel, cycles = (3, 5, 2) if quick else (10, 20, 5)
    api = cluster.client(kubeconfig)
    core = kubernetes.client.CoreV1Api(api)
    namespace = f"dockyard-bench-{uuid.uuid4().hex[:8]}"
    core.create_namespace(
        cluster.body({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    )
    options = KubernetesOptions(
        kubeconfig=kubeconfig, namespace=namespace, host_paths=True, policies_enforced=True
    )
    runtime = KubernetesRuntime(options, deployment=f"bench-{uuid.uuid4().hex[:8]}")
    try:
        # The service account the admission step needs, and its token, appear a moment after the namespace.
        while not any(a.secrets for a in core.list_namespaced_service_account(namespace).items):
            time.sleep(0.2)
        bare_pod(core, namespace)  # warm the kubelet and the image the same way for both sides
        bare = [bare_pod(core, namespace) for _ in range(sequential)]
        report(f"bare pod create -> Running, {sequential} sequential: p50 {statistics.median(bare):.2f} s")
        bare_wall = at_once(parallel, lambda _: bare_pod(core, namespace))
        report(f"bare pods, {parallel} at once: {bare_wall:.2f} s")
        # The same requests and limits the workspaces below get (spec(): 0.1 CPU, 128 MiB).
        limited = {"requests": {"cpu": "25m", "memory": "32Mi"}, "limits": {"cpu": "100m", "memory": "128Mi"}}
        bare_limited = [bare_pod(core, namespace, resources=limited) for _ in range(sequential)]
        report(
            f"bare pod with the workspace's requests/limits, {sequential} sequential: "
            f"p50 {statistics.median(bare_limited):.2f} s"
        )
        # Both sides start on the same node: the bare pods go before Dockyard's are measured (otherwise its 20 at
        # once would run beside 31 bare pods where the bare ones ran beside 11).
        core.delete_collection_namespaced_pod(namespace, label_selector="bench=bare", grace_period_seconds=0)
        while core.list_namespaced_pod(namespace, label_selector="bench=bare").items:
            time.sleep(0.5)
        ready, ready_wall = server_creates(kubeconfig, namespace, sequential, parallel)
        report(
            f"dockyard create -> ready (server, agent connected), {sequential} sequential: p50 "
            f"{statistics.median(ready):.2f} s (ratio {statistics.median(ready) / statistics.median(bare):.2f}, "
            f"target <= 1.5); {parallel} at once: {ready_wall:.2f} s (ratio {ready_wall / bare_wall:.2f}, "
            f"target <= 1.5)"
        )
        workspaces = [spec(i) for i in range(sequential + parallel)]
        ours = [dockyard_start(runtime, w) for w in workspaces[:sequential]]
        ratio = statistics.median(ours) / statistics.median(bare)
        report(
            f"runtime alone (no agent: waits for the kubelet's Running), {sequential} sequential: p50 "
            f"{statistics.median(ours):.2f} s (ratio {ratio:.2f}; "
            f"{statistics.median(ours) / statistics.median(bare_limited):.2f} to the bare pod with limits)"
        )
        wall = at_once(parallel, lambda i: dockyard_start(runtime, workspaces[sequential + i]))
        report(f"runtime alone, {parallel} at once: {wall:.2f} s (ratio {wall / bare_wall:.2f})")
        steps = ", ".join(f"{step} {statistics.median(times):.2f}" for step, times in STEPS.items())
        report(f"runtime start steps, p50 s: {steps}")
        stops, starts = [], []
        for _ in range(cycles):
            started = time.perf_counter()
            runtime.stop(workspaces[0].workspace_id, lambda line: None)
            stops.append(time.perf_counter() - started)
            starts.append(dockyard_start(runtime, workspaces[0]))
        report(
            f"stop p50 {statistics.median(stops):.2f} s, start after stop p50 {statistics.median(starts):.2f} s"
        )
    finally:
        for resource in runtime.managed_resources():
            runtime.remove_resource(resource)
        runtime.close()
        core.delete_namespace(namespace)
        api.close()
    return 0


if __name__ == "__main__":
    sys.exit(main("--quick" in sys.argv))
