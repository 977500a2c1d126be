"""DockerRuntime against the real engine: workspace containers, networks, home volumes, limits, states."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker.errors
import pytest

from dockyard.runtimes.base import (
    ContainerConflict,
    ContainerState,
    ManagedResource,
    Observation,
    RuntimeFailure,
)
from dockyard.runtimes.docker import DockerRuntime
from dockyard.runtimes.docker.naming import container_name, network_name, volume_name
from dockyard.runtimes.plan import WorkspacePlan
from tests.plans import replaced
from tests.runtimes.conftest import SpecFactory

pytestmark = pytest.mark.docker

MiB = 2**20
# The workload records who it runs as, then waits; tests read the records from outside.
RECORDING_COMMAND = [
    "sh",
    "-c",
    "id -u > /tmp/workload-uid; cat /proc/self/status > /tmp/workload-status; exec sleep infinity",
]


def container_of(runtime: DockerRuntime, spec: WorkspacePlan) -> Any:
    return runtime.client.containers.get(container_name(spec.workspace_id))


def sh(container: Any, script: str, *, user: str = "root") -> tuple[int, str]:
    result = container.exec_run(["sh", "-c", script], user=user)
    return int(result.exit_code), bytes(result.output).decode().strip()


def wait_until(check: Callable[[], bool], *, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def leftovers(runtime: DockerRuntime, workspace_id: str) -> list[ManagedResource]:
    return [r for r in runtime.managed_resources() if r.workspace_id == workspace_id]


def labelled(runtime: DockerRuntime, workspace_id: str) -> list[str]:
    """Every container, volume and network with the workspace's label, asked of the engine directly."""
    selector = {"label": f"dockyard.workspace.id={workspace_id}"}
    api = runtime.client.api
    names = [c["Names"][0] for c in api.containers(all=True, filters=selector)]
    names += [v["Name"] for v in api.volumes(filters=selector).get("Volumes") or []]
    names += [n["Name"] for n in api.networks(filters=selector)]
    return names


def test_start_runs_the_workspace_with_its_name_labels_limits_and_user(
    runtime: DockerRuntime, new_spec: SpecFactory, log: list[str]
) -> None:
    spec = new_spec(
        cpu=0.5,
        memory_bytes=192 * MiB,
        pids=128,
        env={"GREETING": "hello world"},
        command=RECORDING_COMMAND,
        files={"/opt/dockyard/agent.txt": b"agent\n", ".config/dockyard/token": b"secret\n"},
        owner="alice",
        template="python",
        build_id="build-42",
    )

    observation = runtime.start(spec, log.append)

    assert observation.state is ContainerState.RUNNING
    assert observation.address
    container = container_of(runtime, spec)
    # The image's own labels (e.g. which package list built the base image) are inherited; ours are these.
    labels = {k: v for k, v in container.labels.items() if k != "dockyard.rootfs"}
    assert labels == {
        "dockyard.managed": "true",
        "dockyard.workspace.id": spec.workspace_id,
        "dockyard.workspace.owner": "alice",
        "dockyard.template": "python",
        "dockyard.build": "build-42",
        "dockyard.config-hash": container.labels["dockyard.config-hash"],
        "dockyard.deployment": runtime.deployment,
    }
    networks = container.attrs["NetworkSettings"]["Networks"]
    assert list(networks) == [network_name(spec.workspace_id)]
    assert networks[network_name(spec.workspace_id)]["IPAddress"] == observation.address
    host = container.attrs["HostConfig"]
    assert host["Privileged"] is False
    assert host["PortBindings"] in (None, {})
    assert host["CapDrop"] == ["ALL"]
    assert sorted(host["CapAdd"]) == sorted(["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID", "KILL"])
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Init"] is True

    checks = {
        "hostname": spec.name,
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes": str(192 * MiB),
        "cat /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes": str(192 * MiB),
        "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us": "50000\n100000",
        "cat /sys/fs/cgroup/pids/pids.max": "128",
        "cat /tmp/workload-uid": "1000",
        "grep -E '^(CapEff|NoNewPrivs):' /tmp/workload-status": "CapEff:\t0000000000000000\nNoNewPrivs:\t1",
        "stat -c '%U %a' /home/dev /home/dev/.config/dockyard/token /opt/dockyard/agent.txt": (
            "dev 755\ndev 644\nroot 644"
        ),
        "cat /home/dev/.config/dockyard/token /opt/dockyard/agent.txt": "secret\nagent",
    }
    as_dev = {
        # The workload's environment: the spec's env plus the user's own HOME and USER.
        "tr '\\0' '\\n' < /proc/$(pgrep -x sleep)/environ | grep -E '^(GREETING|HOME|USER)=' | sort": (
            "GREETING=hello world\nHOME=/home/dev\nUSER=dev"
        ),
        # Only root can read what the setup step was given.
        "ls /.dockyard 2>&1; echo $?": "ls: cannot open directory '/.dockyard': Permission denied\n2",
    }
    assert {script: sh(container, script)[1] for script in checks} == checks
    assert {script: sh(container, script, user="dev")[1] for script in as_dev} == as_dev
    # The home volume is named after the workspace and mounted at the user's home.
    mounts = [(m["Type"], m.get("Name"), m["Destination"]) for m in container.attrs["Mounts"]]
    assert mounts == [("volume", volume_name(spec.workspace_id), "/home/dev")]
    assert any("Creating container" in line for line in log)


def test_a_user_missing_from_the_image_is_created_and_gets_sudo_when_asked(
    runtime: DockerRuntime, new_spec: SpecFactory
) -> None:
    spec = new_spec(user="alice", uid=1234, sudo=True)

    assert runtime.start(spec, lambda line: None).state is ContainerState.RUNNING

    container = container_of(runtime, spec)
    assert container.attrs["HostConfig"]["SecurityOpt"] in (None, [])
    assert sh(container, "id alice; stat -c '%u' /home/alice; sudo -n id -u", user="alice") == (
        0,
        "uid=1234(alice) gid=1234(alice) groups=1234(alice)\n1234\n0",
    )


def test_files_in_the_home_survive_stop_and_start_as_does_the_container_state(
    runtime: DockerRuntime, new_spec: SpecFactory, log: list[str]
) -> None:
    spec = new_spec()
    runtime.start(spec, log.append)
    container = container_of(runtime, spec)
    assert sh(container, "echo kept > /home/dev/notes.txt", user="dev")[0] == 0
    assert sh(container, "echo also-kept > /var/tmp/outside-home")[0] == 0

    runtime.stop(spec.workspace_id, log.append)
    stopped = runtime.observe(spec.workspace_id)
    assert (stopped.state, stopped.exit_code) == (ContainerState.STOPPED, 143)

    resumed = runtime.start(spec, log.append)

    assert resumed.state is ContainerState.RUNNING
    again = container_of(runtime, spec)
    assert again.id == container.id
    assert sh(again, "cat /home/dev/notes.txt /var/tmp/outside-home") == (0, "kept\nalso-kept")


def test_a_changed_configuration_recreates_the_container_but_keeps_the_home(
    runtime: DockerRuntime, new_spec: SpecFactory, log: list[str]
) -> None:
    spec = new_spec()
    runtime.start(spec, log.append)
    first = container_of(runtime, spec)
    sh(first, "echo kept > /home/dev/notes.txt; echo gone > /var/tmp/outside-home")
    runtime.stop(spec.workspace_id, log.append)

    changed = replaced(spec, env={"NEW": "1"}, build_id="build-2")
    runtime.start(changed, log.append)

    second = container_of(runtime, changed)
    assert second.id != first.id
    assert second.labels["dockyard.build"] == "build-2"
    assert sh(second, "cat /home/dev/notes.txt; test -e /var/tmp/outside-home; echo $?") == (0, "kept\n1")
    assert any("configuration changed" in line for line in log)


def test_start_stop_and_delete_are_idempotent_and_delete_leaves_nothing(
    runtime: DockerRuntime, new_spec: SpecFactory, log: list[str]
) -> None:
    spec = new_spec()
    first = runtime.start(spec, log.append)
    container_id = container_of(runtime, spec).id
    second = runtime.start(spec, log.append)
    assert (first, container_of(runtime, spec).id) == (second, container_id)
    assert sorted((r.kind, r.name) for r in leftovers(runtime, spec.workspace_id)) == [
        ("container", container_name(spec.workspace_id)),
        ("network", network_name(spec.workspace_id)),
        ("volume", volume_name(spec.workspace_id)),
    ]

    runtime.stop(spec.workspace_id, log.append)
    runtime.stop(spec.workspace_id, log.append)
    assert runtime.observe(spec.workspace_id).state is ContainerState.STOPPED

    runtime.delete(spec.workspace_id, log.append)
    runtime.delete(spec.workspace_id, log.append)
    runtime.stop(spec.workspace_id, log.append)

    assert runtime.observe(spec.workspace_id).state is ContainerState.MISSING
    assert leftovers(runtime, spec.workspace_id) == []
    assert labelled(runtime, spec.workspace_id) == []


def test_two_workspaces_cannot_reach_each_other(runtime: DockerRuntime, new_spec: SpecFactory) -> None:
    server = ["python3", "-m", "http.server", "8080", "--bind", "0.0.0.0"]
    specs = [new_spec(command=server), new_spec(command=server)]
    addresses = [runtime.start(spec, lambda line: None).address for spec in specs]
    containers = [container_of(runtime, spec) for spec in specs]
    assert all(addresses)
    assert addresses[0] != addresses[1]

    def connect(container: Any, address: str | None) -> str:
        probe = (
            "import socket\n"
            "for attempt in range(50):\n"
            "    try:\n"
            f"        socket.create_connection(({address!r}, 8080), timeout=2).close()\n"
            "        print('connected'); break\n"
            "    except ConnectionRefusedError:\n"  # the listener may still be starting
            "        import time; time.sleep(0.1)\n"
            "    except OSError as exc:\n"
            "        print(type(exc).__name__); break\n"
        )
        return sh(container, f'python3 -c "{probe}"', user="dev")[1]

    assert [connect(containers[0], addresses[0]), connect(containers[1], addresses[1])] == ["connected"] * 2
    assert [connect(containers[0], addresses[1]), connect(containers[1], addresses[0])] == [
        "TimeoutError"
    ] * 2


# Without the egress proxy an allowlist is refused (tests/runtimes/conformance: capabilities are honest); with it,
# tests/egress/test_allowlist_docker.py.
def test_egress_all_gets_a_bridge_of_its_own(runtime: DockerRuntime, new_spec: SpecFactory) -> None:
    spec = new_spec(egress="all")

    runtime.start(spec, lambda line: None)

    network = runtime.client.networks.get(network_name(spec.workspace_id))
    assert (network.attrs["Internal"], network.attrs["Driver"]) == (False, "bridge")
    assert network.attrs["Labels"] == {
        "dockyard.managed": "true",
        "dockyard.workspace.id": spec.workspace_id,
        "dockyard.deployment": runtime.deployment,
    }


def _interfaces(runtime: DockerRuntime, workspace_id: str) -> list[str]:
    container = runtime.client.containers.get(container_name(workspace_id))
    code, output = container.exec_run(["ls", "/sys/class/net"])
    assert code == 0, output
    return bytes(output).decode().split()


def test_egress_none_has_loopback_only(runtime: DockerRuntime, new_spec: SpecFactory) -> None:
    spec = new_spec(egress="none")

    observation = runtime.start(spec, lambda line: None)

    assert observation.state is ContainerState.RUNNING
    attrs = runtime.client.api.inspect_container(container_name(spec.workspace_id))
    # Disabled as well, so the engine makes no network sandbox for it (nor runs its hook) on each start.
    assert (attrs["HostConfig"]["NetworkMode"], attrs["Config"]["NetworkDisabled"]) == ("none", True)
    assert _interfaces(runtime, spec.workspace_id) == ["lo"]
    assert runtime.client.networks.list(names=[network_name(spec.workspace_id)]) == []
    # The engine writes no /etc/hosts then: the setup step's lines resolve localhost and the hostname, and a
    # server listening on loopback answers.
    container = runtime.client.containers.get(container_name(spec.workspace_id))
    code, output = container.exec_run(["getent", "hosts", "localhost", spec.name])
    assert code == 0, output
    resolved = {line.split()[1]: line.split()[0] for line in bytes(output).decode().splitlines()}
    assert resolved[spec.name] == "127.0.1.1"
    assert resolved["localhost"] in ("127.0.0.1", "::1")
    serve_and_dial = (
        "import socket; s = socket.create_server(('localhost', 0)); "
        "socket.create_connection(('localhost', s.getsockname()[1]), timeout=5); print('answered')"
    )
    code, output = container.exec_run(["python3", "-c", serve_and_dial])
    assert (code, bytes(output).strip()) == (0, b"answered")


def test_changing_egress_to_none_recreates_the_container_without_its_bridge(
    runtime: DockerRuntime, new_spec: SpecFactory
) -> None:
    spec = new_spec(egress="all")
    runtime.start(spec, lambda line: None)
    runtime.stop(spec.workspace_id, lambda line: None)

    observation = runtime.start(replaced(spec, egress="none"), lambda line: None)

    assert observation.state is ContainerState.RUNNING
    assert _interfaces(runtime, spec.workspace_id) == ["lo"]
    assert [n.name for n in runtime.client.networks.list(names=[network_name(spec.workspace_id)])] == []

    runtime.stop(spec.workspace_id, lambda line: None)
    observation = runtime.start(spec, lambda line: None)  # and back: a bridge again

    assert observation.state is ContainerState.RUNNING
    assert sorted(_interfaces(runtime, spec.workspace_id)) == ["eth0", "lo"]


def test_a_workload_over_its_memory_limit_is_observed_as_oom_killed(
    runtime: DockerRuntime, new_spec: SpecFactory
) -> None:
    spec = new_spec(memory_bytes=48 * MiB, command=["python3", "-c", "data = b'x' * (512 * 2**20)"])

    runtime.start(spec, lambda line: None)

    wait_until(
        lambda: runtime.observe(spec.workspace_id).state is not ContainerState.RUNNING, what="the OOM kill"
    )
    observation = runtime.observe(spec.workspace_id)
    assert (observation.state, observation.exit_code) == (ContainerState.OOM_KILLED, 137)
    assert runtime.observe_all()[spec.workspace_id] == observation


def test_a_workload_that_exits_on_its_own_is_exited_with_its_code(
    runtime: DockerRuntime, new_spec: SpecFactory
) -> None:
    spec = new_spec(command=["sh", "-c", "exit 7"])

    runtime.start(spec, lambda line: None)

    wait_until(
        lambda: runtime.observe(spec.workspace_id).state is not ContainerState.RUNNING, what="the exit"
    )
    assert runtime.observe(spec.workspace_id) == Observation(
        spec.workspace_id, ContainerState.EXITED, 7, "exited with code 7"
    )


def test_a_container_removed_behind_the_runtimes_back_is_missing(
    runtime: DockerRuntime, new_spec: SpecFactory
) -> None:
    spec = new_spec()
    runtime.start(spec, lambda line: None)

    container_of(runtime, spec).remove(force=True)

    assert runtime.observe(spec.workspace_id).state is ContainerState.MISSING
    assert spec.workspace_id not in runtime.observe_all()
    # The next start brings it back on the same home volume.
    assert runtime.start(spec, lambda line: None).state is ContainerState.RUNNING


def test_observe_all_reports_every_workspace_in_its_state(
    runtime: DockerRuntime, new_spec: SpecFactory
) -> None:
    running, stopped, exited = new_spec(), new_spec(), new_spec(command=["sh", "-c", "exit 3"])
    for spec in (running, stopped, exited):
        runtime.start(spec, lambda line: None)
    runtime.stop(stopped.workspace_id, lambda line: None)
    wait_until(lambda: runtime.observe(exited.workspace_id).state is ContainerState.EXITED, what="the exit")

    everything = runtime.observe_all()

    assert {
        everything[s.workspace_id] == runtime.observe(s.workspace_id) for s in (running, stopped, exited)
    } == {True}
    assert [everything[s.workspace_id].state for s in (running, stopped, exited)] == [
        ContainerState.RUNNING,
        ContainerState.STOPPED,
        ContainerState.EXITED,
    ]
    assert everything[running.workspace_id].address


def test_remove_resource_removes_each_kind(runtime: DockerRuntime, new_spec: SpecFactory) -> None:
    spec = new_spec()
    runtime.start(spec, lambda line: None)
    resources = sorted(
        leftovers(runtime, spec.workspace_id), key=lambda r: ["container", "volume", "network"].index(r.kind)
    )
    assert [r.kind for r in resources] == ["container", "volume", "network"]

    for resource in resources:
        runtime.remove_resource(resource)
        runtime.remove_resource(resource)

    assert labelled(runtime, spec.workspace_id) == []


def test_a_created_but_never_started_container_is_stopped(
    runtime: DockerRuntime, new_spec: SpecFactory
) -> None:
    spec = new_spec()
    runtime.start(spec, lambda line: None)
    container = container_of(runtime, spec)
    # A bare `create` of the same image stands in for a start interrupted between create and start.
    container.remove(force=True)
    runtime.client.containers.create(
        spec.image,
        name=container_name(spec.workspace_id),
        labels={"dockyard.workspace.id": spec.workspace_id},
    )

    assert runtime.observe(spec.workspace_id) == Observation(
        spec.workspace_id, ContainerState.STOPPED, detail="created, never started"
    )
    # Its labels lack the config hash, so the next start replaces it.
    assert runtime.start(spec, lambda line: None).state is ContainerState.RUNNING
    assert container_of(runtime, spec).labels["dockyard.workspace.owner"] == "alice"


def test_docker_not_found_errors_do_not_escape(runtime: DockerRuntime) -> None:
    with pytest.raises(docker.errors.NotFound):
        runtime.client.containers.get(container_name("never-made"))
    assert runtime.observe("never-made").state is ContainerState.MISSING
    runtime.stop("never-made", lambda line: None)
    runtime.delete("never-made", lambda line: None)


def test_parallel_starts_get_their_own_subnets_from_the_pool(
    runtime: DockerRuntime, new_spec: SpecFactory
) -> None:
    pooled = DockerRuntime(
        runtime.base_url, subnet_pool="10.231.0.0/24", subnet_prefix=28, deployment=runtime.deployment
    )
    specs = [new_spec() for _ in range(6)]
    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            observations = list(pool.map(lambda spec: pooled.start(spec, lambda line: None), specs))
    finally:
        pooled.close()

    assert [o.state for o in observations] == [ContainerState.RUNNING] * 6
    subnets = [
        ipaddress.ip_network(
            runtime.client.networks.get(network_name(s.workspace_id)).attrs["IPAM"]["Config"][0]["Subnet"]
        )
        for s in specs
    ]
    assert len(set(subnets)) == 6
    assert all(subnet.subnet_of(ipaddress.ip_network("10.231.0.0/24")) for subnet in subnets)  # type: ignore[arg-type]
    assert all(
        ipaddress.ip_address(o.address or "") in subnet
        for o, subnet in zip(observations, subnets, strict=True)
    )


def test_an_exhausted_subnet_pool_fails_the_start_clearly(
    runtime: DockerRuntime, new_spec: SpecFactory
) -> None:
    pooled = DockerRuntime(
        runtime.base_url, subnet_pool="10.231.1.0/27", subnet_prefix=28, deployment=runtime.deployment
    )
    try:
        for _ in range(2):
            pooled.start(new_spec(), lambda line: None)
        with pytest.raises(RuntimeFailure) as failure:
            pooled.start(new_spec(), lambda line: None)
    finally:
        pooled.close()

    assert failure.value.message == "No free /28 subnet is left in the workspace subnet pool 10.231.1.0/27."


def test_a_stopped_workspace_whose_network_was_removed_starts_again(
    runtime: DockerRuntime, new_spec: SpecFactory, log: list[str]
) -> None:
    spec = new_spec()
    runtime.start(spec, log.append)
    runtime.stop(spec.workspace_id, log.append)
    runtime.client.networks.get(network_name(spec.workspace_id)).remove()

    observation = runtime.start(spec, log.append)

    assert observation.state is ContainerState.RUNNING
    assert observation.address
    assert f"Removing container {container_name(spec.workspace_id)}: its network was replaced" in log


def test_removing_a_network_a_running_container_uses_is_a_conflict(
    runtime: DockerRuntime, new_spec: SpecFactory
) -> None:
    spec = new_spec()
    runtime.start(spec, lambda line: None)
    network = ManagedResource("network", network_name(spec.workspace_id), spec.workspace_id)

    with pytest.raises(ContainerConflict, match="is still in use by a container"):
        runtime.remove_resource(network)
