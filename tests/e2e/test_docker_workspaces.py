"""Workspaces through the whole stack: API → provisioner worker → Docker engine, and back."""

from __future__ import annotations

from pathlib import Path

import docker

from dockyard.runtimes.docker.naming import container_name
from dockyard_sdk import models as m
from tests.harness import Harness, tar_gz

MANIFEST = """
name: dev
image: dockyard/base:bookworm
resources: {cpu: 1.5, memory: 512Mi, pids: 300}
network: {egress: none}
"""


def _exec(client: docker.DockerClient, workspace: m.Workspace, command: str) -> tuple[int, str]:
    container = client.containers.get(container_name(workspace.id))
    code, output = container.exec_run(["bash", "-lc", command], user="dev")
    return code, output.decode()


def _labelled(client: docker.DockerClient, workspace_id: str) -> list[str]:
    label = {"label": f"dockyard.workspace.id={workspace_id}"}
    return (
        [c.name for c in client.containers.list(all=True, filters=label)]
        + [v.name for v in client.volumes.list(filters=label)]
        + [n.name for n in client.networks.list(filters=label)]
    )


def test_lifecycle_keeps_home_and_delete_removes_everything(
    dh: Harness, docker_client: docker.DockerClient
) -> None:
    dh.admin.create_template(tar_gz({"dockyard.yaml": MANIFEST}))
    ws = dh.await_build(dh.admin.create_workspace(m.CreateWorkspaceRequest(template="dev", name="ws1")).id)
    assert ws.status == m.WorkspaceStatus.RUNNING, ws.status_reason
    assert _exec(docker_client, ws, "echo kept > ~/notes.txt && hostname && id -u") == (0, "ws1\n1000\n")
    # The limits the template asked for, read back from inside.
    code, limits = _exec(
        docker_client,
        ws,
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes "
        "/sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us "
        "/sys/fs/cgroup/pids/pids.max",
    )
    assert (code, limits.split()) == (0, [str(512 * 2**20), "150000", "100000", "300"])

    dh.admin.stop_workspace("ws1")
    stopped = dh.await_build("ws1")
    assert stopped.status == m.WorkspaceStatus.STOPPED
    assert docker_client.containers.get(container_name(ws.id)).status == "exited"
    dh.admin.start_workspace("ws1")
    assert dh.await_build("ws1").status == m.WorkspaceStatus.RUNNING
    assert _exec(docker_client, ws, "cat ~/notes.txt") == (0, "kept\n")

    dh.admin.delete_workspace("ws1")
    assert dh.await_build(ws.id).status == m.WorkspaceStatus.DELETED
    assert _labelled(docker_client, ws.id) == []


def test_workspaces_cannot_reach_each_other(dh: Harness, docker_client: docker.DockerClient) -> None:
    dh.admin.create_template(tar_gz({"dockyard.yaml": MANIFEST.replace("egress: none", "egress: all")}))
    a = dh.await_build(dh.admin.create_workspace(m.CreateWorkspaceRequest(template="dev", name="a")).id)
    b = dh.await_build(dh.admin.create_workspace(m.CreateWorkspaceRequest(template="dev", name="b")).id)
    container_b = docker_client.containers.get(container_name(b.id))
    container_b.exec_run(["python3", "-m", "http.server", "8080"], user="dev", detach=True)
    address_b = next(iter(container_b.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]
    probe = (
        'python3 -c "import socket,sys; s=socket.socket(); s.settimeout(2); '
        'sys.exit(s.connect_ex((sys.argv[1], 8080)))" '
    )
    for _ in range(20):
        if _exec(docker_client, b, probe + "127.0.0.1")[0] == 0:
            break
    assert _exec(docker_client, b, probe + address_b)[0] == 0  # b reaches its own listener
    assert _exec(docker_client, a, probe + address_b)[0] != 0  # a cannot


def test_failed_image_build_leaves_failed_workspace_with_docker_output(dh: Harness) -> None:
    files = {
        "dockyard.yaml": "name: broken\nbuild: {dockerfile: Dockerfile}\n",
        "Dockerfile": "FROM dockyard/base:bookworm\nRUN echo building-step-output && exit 3\n",
    }
    dh.admin.create_template(tar_gz(files))
    ws = dh.await_build(
        dh.admin.create_workspace(m.CreateWorkspaceRequest(template="broken")).id, timeout=120
    )
    assert ws.status == m.WorkspaceStatus.FAILED
    logs = [line.output for line in dh.admin.build_logs(ws.latest_build.id)]
    assert any("building-step-output" in line for line in logs)
    assert "returned a non-zero code: 3" in ws.status_reason


def test_engine_outage_fails_builds_then_recovers(dh: Harness, engine_link: Path) -> None:
    dh.admin.create_template(tar_gz({"dockyard.yaml": MANIFEST}))
    engine_link.unlink()
    try:
        ws = dh.await_build(
            dh.admin.create_workspace(m.CreateWorkspaceRequest(template="dev", name="ws1")).id
        )
        assert ws.status == m.WorkspaceStatus.FAILED
        # The socket path is the server's business: the user sees its last part (docs/SECURITY.md).
        assert ws.status_reason.startswith("Docker engine unreachable at unix://…/docker.sock")
        assert dh.admin.health().status == "ok"
        report = dh.admin.doctor()
        assert (report.runtime_ok, report.runtime_error.startswith("Docker engine unreachable")) == (
            False,
            True,
        )
    finally:
        engine_link.symlink_to("/var/run/docker.sock")
    dh.admin.start_workspace("ws1")
    assert dh.await_build("ws1").status == m.WorkspaceStatus.RUNNING


def test_container_removed_behind_dockyards_back(dh: Harness, docker_client: docker.DockerClient) -> None:
    dh.admin.create_template(tar_gz({"dockyard.yaml": MANIFEST}))
    ws = dh.await_build(dh.admin.create_workspace(m.CreateWorkspaceRequest(template="dev", name="ws1")).id)
    docker_client.containers.get(container_name(ws.id)).remove(force=True)
    dh.app.state.background.tick()
    seen = dh.admin.get_workspace("ws1")
    assert (seen.status, seen.status_reason) == (
        m.WorkspaceStatus.FAILED,
        "the container was removed outside Dockyard",
    )
    dh.admin.start_workspace("ws1")
    assert dh.await_build("ws1").status == m.WorkspaceStatus.RUNNING
