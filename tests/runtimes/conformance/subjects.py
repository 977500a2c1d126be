"""The runtimes the conformance suite runs against, each behind the same small test-side interface.

A runtime joins the suite by registering a factory here: `@subject("kubernetes")` on a context manager that
yields a `Subject`. The suite (test_contract.py) is parametrised over `SUBJECTS`, so every test runs against
every registered runtime. What a `Subject` adds to the `Runtime` are the few things a test must see from
outside the contract: a command run in the workspace through the engine (not through Dockyard's agent), the
limits the engine applied, and what it still holds labelled for a workspace.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dockyard.runtimes.base import Runtime
from dockyard.runtimes.plan import LINK_MOUNT, SOCKET_NAME, Resources, WorkspacePlan
from dockyard.tunnel.install import install_agent
from dockyard.tunnel.links import AgentLinks
from tests.fakes import FakeRuntime
from tests.plans import workspace_plan


@dataclass
class Subject:
    runtime: Runtime
    # Makes a plan for a fresh workspace id (deleted after the test); keyword arguments as tests.plans takes.
    plan: Callable[..., WorkspacePlan]
    # Runs argv as the workspace user inside the running workspace, through the engine; returns stdout.
    run: Callable[[str, list[str]], str]
    # The CPU, memory and pids limits the engine applied to the workspace.
    limits: Callable[[str], Resources]
    # Whether the workspace may open connections beyond its own network (as the engine enforces it).
    routes_out: Callable[[str], bool]
    # Names of objects the engine still holds labelled with the workspace's id.
    labelled: Callable[[str], list[str]]
    links: AgentLinks
    agent_dir: Path
    # Limits the engine is known not to apply per workspace ("pids" on Kubernetes: the kubelet's is node-wide);
    # the suite checks the others and names these in the runtime's docs rather than pretending.
    gaps: frozenset[str] = frozenset()


SubjectFactory = Callable[[pytest.FixtureRequest, Path], contextlib.AbstractContextManager[Subject]]
SUBJECTS: dict[str, SubjectFactory] = {}


def subject(name: str) -> Callable[[SubjectFactory], SubjectFactory]:
    def register(factory: SubjectFactory) -> SubjectFactory:
        SUBJECTS[name] = factory
        return factory

    return register


def _folders(tmp: Path) -> tuple[Path, AgentLinks]:
    agent_dir = tmp / "agent"
    install_agent(agent_dir)
    links = AgentLinks(tmp / "agents")
    return agent_dir, links


def _plans(base: dict[str, Any], made: list[str]) -> Callable[..., WorkspacePlan]:
    def make(**overrides: Any) -> WorkspacePlan:
        from tests.docker_fixtures import SESSION_PREFIX

        workspace_id = f"{SESSION_PREFIX}-c{uuid.uuid4().hex[:8]}"
        made.append(workspace_id)
        values = {
            "workspace_id": workspace_id,
            "name": f"conf-{workspace_id}",
            "owner": "alice",
            "owner_id": "user-1",
            "template": "conformance",
            "build_id": "build-1",
            **base,
            **overrides,
        }
        return workspace_plan(**values)

    return make


@subject("fake")
@contextlib.contextmanager
def fake_subject(request: pytest.FixtureRequest, tmp: Path) -> Iterator[Subject]:
    agent_dir, links = _folders(tmp)
    runtime = FakeRuntime(agents=True)
    runtime.bind_deployment("conformance")
    runtime.bind_agent(agent_dir, links.root)
    made: list[str] = []

    def run(workspace_id: str, argv: list[str]) -> str:
        assert runtime.containers.get(workspace_id) is not None
        home = runtime.homes[workspace_id]
        env = {"PATH": os.environ["PATH"], "HOME": home}
        return subprocess.run(argv, env=env, cwd=home, capture_output=True, check=True, text=True).stdout

    def limits(workspace_id: str) -> Resources:
        return runtime.plans[workspace_id].resources

    def routes_out(workspace_id: str) -> bool:
        # The fake keeps no networks: it reports what it was asked for.
        return runtime.network_classes.get(workspace_id, "") != "internal" and (
            runtime.plans[workspace_id].network.egress.value == "all"
        )

    def labelled(workspace_id: str) -> list[str]:
        return [r.name for r in runtime.managed_resources() if r.workspace_id == workspace_id]

    try:
        plans = _plans({"image": "dockyard/base:bookworm"}, made)
        yield Subject(runtime, plans, run, limits, routes_out, labelled, links, agent_dir)
    finally:
        runtime.close()


@subject("docker")
@contextlib.contextmanager
def docker_subject(request: pytest.FixtureRequest, tmp: Path) -> Iterator[Subject]:
    from dockyard.runtimes.docker import DockerRuntime
    from dockyard.runtimes.docker.naming import LABEL_WORKSPACE, container_name, network_name

    engine: DockerRuntime = request.getfixturevalue("engine")
    base_image: str = request.getfixturevalue("base_image")
    agent_dir, links = _folders(tmp)
    runtime = DockerRuntime(engine.base_url, deployment=engine.deployment, ready_timeout=30)
    runtime.bind_agent(agent_dir, links.root)
    client = runtime.client
    made: list[str] = []

    def run(workspace_id: str, argv: list[str]) -> str:
        container = client.containers.get(container_name(workspace_id))
        code, output = container.exec_run(argv, user="1000", environment={"HOME": "/home/dev"})
        assert code == 0, output
        return bytes(output).decode()

    def limits(workspace_id: str) -> Resources:
        host = client.api.inspect_container(container_name(workspace_id))["HostConfig"]
        return Resources(cpu=host["NanoCpus"] / 1e9, memory_bytes=host["Memory"], pids=host["PidsLimit"])

    def routes_out(workspace_id: str) -> bool:
        # What the engine enforces: an internal network's bridge forwards nothing beyond itself. (Trying a
        # connection out would send traffic off this machine.)
        attrs = client.api.inspect_container(container_name(workspace_id))
        if attrs["HostConfig"]["NetworkMode"] == "none":
            return False  # loopback only
        networks = attrs["NetworkSettings"]["Networks"]
        assert list(networks) == [network_name(workspace_id)]
        return not client.api.inspect_network(network_name(workspace_id))["Internal"]

    def labelled(workspace_id: str) -> list[str]:
        selector = {"label": f"{LABEL_WORKSPACE}={workspace_id}"}
        return (
            [c["Names"][0] for c in client.api.containers(all=True, filters=selector)]
            + [v["Name"] for v in client.api.volumes(filters=selector).get("Volumes") or []]
            + [n["Name"] for n in client.api.networks(filters=selector)]
        )

    try:
        yield Subject(
            runtime,
            _plans({"image": base_image, "cpu": 0.5, "memory_bytes": 256 * 2**20, "pids": 256}, made),
            run,
            limits,
            routes_out,
            labelled,
            links,
            agent_dir,
        )
    finally:
        for workspace_id in made:
            runtime.delete(workspace_id, lambda line: None)
        runtime.close()


def hub_socket(links: AgentLinks, workspace_id: str, *, uid: int) -> socket.socket:
    """A listening socket where a `unix_socket` link's agent dials (what the hub makes), with a token beside."""
    folder = links.prepare(workspace_id, token=f"dya_{workspace_id}_test", uid=uid)
    path = folder / SOCKET_NAME
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    os.chmod(path, 0o666)  # noqa: S103 - reached only through the workspace's private folder
    listener.listen(4)
    listener.settimeout(30)
    assert LINK_MOUNT.endswith("/link")
    return listener


@subject("kubernetes")
@contextlib.contextmanager
def kubernetes_subject(request: pytest.FixtureRequest, tmp: Path) -> Iterator[Subject]:
    """The one-node cluster of scripts/kubernetes.sh (pods on this host, so host folders reach them)."""
    kubeconfig = os.environ.get("DOCKYARD_KUBECONFIG", "")
    if not kubeconfig or not Path(kubeconfig).is_file():
        if os.environ.get("DOCKYARD_REQUIRE_KUBERNETES") == "1":
            pytest.fail("no Kubernetes cluster (DOCKYARD_KUBECONFIG), but DOCKYARD_REQUIRE_KUBERNETES=1")
        pytest.skip("no Kubernetes cluster: set DOCKYARD_KUBECONFIG (bash scripts/kubernetes.sh up)")
    import kubernetes.client
    import kubernetes.stream

    from dockyard.runtimes.kubernetes import cluster, manifests
    from dockyard.runtimes.kubernetes.options import KubernetesOptions
    from dockyard.runtimes.kubernetes.runtime import KubernetesRuntime

    namespace = f"dockyard-conf-{uuid.uuid4().hex[:8]}"
    api = cluster.client(kubeconfig)
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespace(
        cluster.body({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    )
    agent_dir, links = _folders(tmp)
    options = KubernetesOptions(
        kubeconfig=kubeconfig,
        namespace=namespace,
        local_volume_root=str(tmp / "volumes"),
        host_paths=True,
        ready_timeout=90,
        image_pull_policy="Never",
    )
    runtime = KubernetesRuntime(options, deployment=f"conf-{uuid.uuid4().hex[:8]}")
    runtime.bind_agent(agent_dir, links.root)
    made: list[str] = []

    def run(workspace_id: str, argv: list[str]) -> str:
        output: str = kubernetes.stream.stream(
            core.connect_get_namespaced_pod_exec,
            manifests.pod_name(workspace_id),
            namespace,
            container=manifests.WORKSPACE_CONTAINER,
            command=argv,
            stderr=False,
            stdin=False,
            stdout=True,
            tty=False,
        )
        return output

    def limits(workspace_id: str) -> Resources:
        pod = core.read_namespaced_pod(manifests.pod_name(workspace_id), namespace)
        applied = pod.spec.containers[0].resources.limits
        cpu = applied["cpu"]
        cores = int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
        # The kubelet limits pids node-wide (podPidsLimit), not per pod: 0 says "not limited" (Subject.gaps).
        return Resources(cpu=cores, memory_bytes=int(applied["memory"]), pids=0)

    def routes_out(workspace_id: str) -> bool:
        # What the runtime asks of the cluster: an egress rule to anywhere. (This cluster's plugin does not
        # enforce policies, so the runtime offers egress `all` alone and the suite starts nothing else.)
        policy = kubernetes.client.NetworkingV1Api(api).read_namespaced_network_policy(
            manifests.policy_name(workspace_id), namespace
        )
        rules = policy.spec.egress or []
        return any(
            peer.ip_block is not None and peer.ip_block.cidr in ("0.0.0.0/0", "::/0")
            for rule in rules
            for peer in rule.to or []
        )

    def labelled(workspace_id: str) -> list[str]:
        return [r.name for r in runtime.managed_resources() if r.workspace_id == workspace_id]

    try:
        yield Subject(
            runtime,
            _plans({"image": "dockyard/base:bookworm", "cpu": 0.5, "memory_bytes": 256 * 2**20}, made),
            run,
            limits,
            routes_out,
            labelled,
            links,
            agent_dir,
            gaps=frozenset({"pids"}),
        )
    finally:
        for workspace_id in made:
            runtime.delete(workspace_id, lambda line: None)
        runtime.close()
        core.delete_namespace(namespace)
        api.close()
