"""End to end through a real `dockyard server --runtime kubernetes` process and the real cluster.

No host folder reaches the pods: the agent's program comes from a ConfigMap and its token from the workspace's
Secret, and it dials the server over the network (`--agent-url` on docker0's address, where the test cluster's
pods live), the server checking each connection against the pod's address.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pty
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import kubernetes.client
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from dockyard.runtimes.kubernetes import manifests
from dockyard_sdk import models as m
from tests.api.test_brief_requests import BRIEF_CURL
from tests.gateway.conftest import Terminal, make_key, openssh_for, register_key, text_of
from tests.live import LiveServer, start_live_server, stop_live_server

pytestmark = [pytest.mark.kubernetes, pytest.mark.timeout(600)]

# docker0's address: the test cluster's pods sit on Docker's default bridge and reach the host there.
HOST = "172.17.0.1"
VOLUMES = Path("/var/lib/dockyard-volumes")


def _server(kubeconfig: str, namespace: str, **extra: str) -> LiveServer:
    wanted = {
        "DOCKYARD_RUNTIME": "kubernetes",
        "DOCKYARD_KUBECONFIG": kubeconfig,
        "DOCKYARD_KUBERNETES_NAMESPACE": namespace,
        # The sandbox template has egress none; the test cluster stores policies without enforcing them.
        "DOCKYARD_KUBERNETES_POLICIES_ENFORCED": "1",
        **extra,
    }
    saved = {key: os.environ.get(key) for key in wanted}
    os.environ.update(wanted)
    try:
        return start_live_server(host=HOST, env_extra={"DOCKYARD_AGENT_URL": "{url}"})
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
    found += [
        f"secret/{s.metadata.name}"
        for s in core.list_namespaced_secret(namespace, label_selector=selector).items
    ]
    found += [f"pv/{v.metadata.name}" for v in core.list_persistent_volume(label_selector=selector).items]
    return sorted(found)


def _sh(live: LiveServer, ws: m.Workspace, command: str) -> m.ExecResult:
    return live.client.exec(ws.id, m.ExecRequest(command=command))  # type: ignore[arg-type]


def _curl_create(live: LiveServer) -> str:
    """The brief's request as printed (curl -d, no JSON content type), with no repository to clone: nothing
    may leave this machine."""
    command = BRIEF_CURL.replace('"github.com/org/backend"', '""') + " -sS -w '\\n%{http_code}'"
    done = subprocess.run(
        ["bash", "-c", command],
        env={"PATH": os.environ["PATH"], "DOCKYARD_URL": live.url, "AGENT_TOKEN": live.token},
        capture_output=True,
        text=True,
        timeout=60,
    )
    body, _, status = done.stdout.rpartition("\n")
    assert status == "201", done
    return str(json.loads(body)["id"])


def _ready(live: LiveServer, workspace_id: str) -> m.Workspace:
    ready = live.client.get_workspace(workspace_id, wait="ready", timeout=180)
    assert ready.status == m.WorkspaceStatus.RUNNING, ready.status_reason
    assert ready.agent is not None
    assert ready.agent.lifecycle == m.AgentLifecycle.READY, ready.agent
    return ready


def _pty(live: LiveServer, ws: m.Workspace) -> None:
    url = live.url.replace("http://", "ws://") + f"/api/v2/workspaces/{ws.id}/pty?width=90&height=20"
    with ws_connect(url, additional_headers={"Authorization": f"Bearer {live.token}"}) as conn:
        conn.send(b"echo $((40+2))-$TERM; stty size; exit\n")
        seen, messages = b"", []
        with contextlib.suppress(ConnectionClosed):
            while True:
                message = conn.recv(timeout=20)
                if isinstance(message, bytes):
                    seen += message
                else:
                    messages.append(json.loads(message))
    assert b"42-xterm-256color" in seen, seen
    assert b"20 90" in seen, seen
    assert any(x["type"] == "exit" for x in messages), messages


def _ssh_with_terminal(live: LiveServer, folder: Path, name: str) -> None:
    """A real OpenSSH client through the gateway: a command, then an interactive shell on a terminal."""
    key = make_key(folder / "key")
    register_key(live.client, key)
    ssh = openssh_for(live.client, folder / "client", ("127.0.0.1", live.ssh_port))
    assert text_of(ssh.run(name, key, "id -un; cat ~/TASK.md")) == (0, "dev\nfix the flaky test\n", "")
    master, terminal = pty.openpty()
    command = ssh.ssh(name, key)
    process = subprocess.Popen(
        [command[0], "-tt", *command[1:]],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, "TERM": "xterm-256color"},
        start_new_session=True,
    )
    os.close(terminal)
    try:
        os.write(master, b"echo on-$(tty | cut -c1-9)-$((6*7)); exit 3\r")
        Terminal(master).expect(b"on-/dev/pts/-42")
        assert process.wait(timeout=60) == 3
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)


def test_a_workspace_lives_its_whole_life_as_a_pod(
    kube_live: LiveServer, api: kubernetes.client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    """Both request shapes → pod running → agent ready over the network → exec, files, PTY, SSH → stop (pod
    gone, home kept) → start (the home's file survived) → delete (nothing labelled left)."""
    live = kube_live
    # The README's shape, as JSON with its content type; the brief's, by curl without one.
    readme = httpx.post(
        f"{live.url}/api/v2/workspaces",
        json={"template": "ai-agent-sandbox", "ttl": "4h", "name": "task-readme",
              "parameters": {"repo": "", "task": "fix the flaky test", "agent": "claude-code"}},
        headers={"Authorization": f"Bearer {live.token}"},
        timeout=60,
    )  # fmt: skip
    assert readme.status_code == 201, readme.text
    ws = _ready(live, readme.json()["id"])
    other = _ready(live, _curl_create(live))
    assert (other.name, other.parameters["ttl_hours"]) == ("agent-task-4821", 4)

    # The agent dialled the server from its pod's own address, with the token from its Secret.
    pod = kubernetes.client.CoreV1Api(api).read_namespaced_pod(manifests.pod_name(ws.id), namespace)
    volumes = [v.name for v in pod.spec.volumes]
    assert [v for v in volumes if v != "home"] == [manifests.AGENT_VOLUME], volumes
    assert not any(v.host_path for v in pod.spec.volumes if v.name != "home")
    connected = [
        json.loads(line)
        for line in live.log().splitlines()
        if line.startswith("{") and '"agent connected"' in line and ws.id in line
    ]
    assert connected, live.log()[-2000:]
    assert connected[-1]["origin"] == f"network from {pod.status.pod_ip} of workspace {ws.id}"
    result = _sh(
        live,
        ws,
        "id -u; echo $HOME $DOCKYARD_URL; stat -c '%a %U' /run/dockyard/link/token; "
        "test -w /run/dockyard/agent.py || echo read-only; echo kept > ~/notes.txt; hostname",
    )
    assert result.exit_code == 0, result
    assert result.stdout.split() == ["1000", "/home/dev", live.url, "440", "root", "read-only", "task-readme"]

    live.client.write_file(ws.id, "app/main.py", b"print(6 * 7)\n")
    ran = live.client.exec(ws.id, m.ExecRequest(command="python3 main.py", cwd="app"))  # type: ignore[arg-type]
    assert (ran.exit_code, ran.stdout) == (0, "42\n")
    assert live.client.read_file(ws.id, "app/main.py") == b"print(6 * 7)\n"
    _pty(live, ws)
    _ssh_with_terminal(live, tmp_path, ws.name)
    assert _labelled(api, namespace, ws.id) == sorted(
        [
            f"pod/{manifests.pod_name(ws.id)}",
            f"pvc/{manifests.claim_name(ws.id)}",
            f"networkpolicy/{manifests.policy_name(ws.id)}",
            f"secret/{manifests.secret_name(ws.id)}",
            f"pv/{manifests.volume_name(namespace, ws.id)}",
        ]
    )

    live.client.create_build(ws.id, m.CreateBuildRequest(transition=m.Transition.STOP))
    stopped = live.client.get_workspace(ws.id, wait="done", timeout=120)
    assert stopped.status == m.WorkspaceStatus.STOPPED, stopped.status_reason
    left = _labelled(api, namespace, ws.id)
    assert f"pod/{manifests.pod_name(ws.id)}" not in left
    assert f"pvc/{manifests.claim_name(ws.id)}" in left

    live.client.create_build(ws.id, m.CreateBuildRequest(transition=m.Transition.START))
    again = _ready(live, ws.id)
    assert _sh(live, again, "cat ~/notes.txt").stdout == "kept\n"

    for each in (ws, other):
        live.client.delete_workspace(each.id)
    for each in (ws, other):
        deleted = live.client.get_workspace(each.id, wait="done", timeout=120)
        assert deleted.status == m.WorkspaceStatus.DELETED, deleted.status_reason
        assert _labelled(api, namespace, each.id) == []
        # The local volume's folder is on the node, which here is this host.
        shutil.rmtree(VOLUMES / manifests.volume_name(namespace, each.id), ignore_errors=True)


def test_an_agent_token_used_from_another_address_is_refused(
    kube_live: LiveServer, api: kubernetes.client.ApiClient, namespace: str
) -> None:
    """The token alone is not enough: a connection from anywhere but the workspace's pod is refused."""
    ws = kube_live.workspace("kube2", template="base")
    secret = kubernetes.client.CoreV1Api(api).read_namespaced_secret(manifests.secret_name(ws.id), namespace)
    token = base64.b64decode(secret.data[manifests.AGENT_TOKEN_KEY]).decode()
    refused = httpx.get(
        f"{kube_live.url}/api/v2/agents/link",
        headers={
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Authorization": f"Bearer {token}",
        },
        timeout=30,
    )
    assert refused.status_code == 403, refused.text
    answer = refused.json()
    assert (answer["message"], answer["validations"]) == ("This agent connection is refused.", [])
    # From this host's own address (the kernel picks it), which is not the pod's.
    source = answer["detail"].removeprefix("connection from ").removesuffix(", not from the workspace")
    assert source != answer["detail"]
    pod = kubernetes.client.CoreV1Api(api).read_namespaced_pod(manifests.pod_name(ws.id), namespace)
    assert source != pod.status.pod_ip
    assert kube_live.client.get_workspace(ws.id).agent.status == m.AgentConnection.CONNECTED  # type: ignore[union-attr]


def test_a_pod_deleted_behind_dockyards_back_shows_as_drift(
    kube_live: LiveServer, api: kubernetes.client.ApiClient, namespace: str
) -> None:
    ws = kube_live.workspace("kube2", template="base")
    kubernetes.client.CoreV1Api(api).delete_namespaced_pod(manifests.pod_name(ws.id), namespace)
    deadline = time.monotonic() + 60
    while True:
        seen = kube_live.client.get_workspace(ws.id)
        if seen.status_reason and "outside Dockyard" in seen.status_reason:
            break
        assert time.monotonic() < deadline, seen
        time.sleep(0.5)


def test_a_server_that_cannot_use_its_namespace_says_so(kubeconfig: str) -> None:
    """The server says so at start, `dockyard doctor` shows it and a build fails with it. (An API that does not
    answer and RBAC that forbids pods take the same path through the server: test_cluster.py checks their
    messages from `ping` and from a start, which is what a build runs.)"""
    said = "Kubernetes namespace no-such-namespace does not exist at https://"
    server = _server(kubeconfig, "no-such-namespace")
    try:
        assert f"the kubernetes runtime cannot be used: {said}" in server.log()
        report = server.client.doctor()
        assert (report.runtime, report.runtime_ok) == ("kubernetes", False)
        assert report.runtime_error.startswith(said), report.runtime_error
        ws = server.client.create_workspace(m.CreateWorkspaceRequest(template="base", name="broken"))
        failed = server.client.get_workspace(ws.id, wait="ready", timeout=120)
        assert failed.status == m.WorkspaceStatus.FAILED, failed.status
        assert (failed.status_reason or "").startswith(said), failed.status_reason
    finally:
        stop_live_server(server)
