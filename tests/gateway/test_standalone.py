"""The SSH gateway as its own process (`dockyard gateway`): it reaches agents through the server's agent-stream
route (`api/routes/agentstreams.py`) with a RemoteHub (`tunnel/remote.py`).

The route's refusals and a RemoteHub-backed gateway against an in-process server (agents as local processes) run
in seconds; the `dockyard gateway` process next to a real `dockyard server` with Docker workspaces is marked
`docker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
import uvicorn
from starlette.testclient import WebSocketDenialResponse

from dockyard.errors import NotFound, ValidationFailed
from dockyard.gateway.server import Gateway
from dockyard.tunnel import frames
from dockyard.tunnel.hub import AgentUnavailable
from dockyard.tunnel.remote import RemoteHub
from dockyard_sdk import Client
from dockyard_sdk import models as m
from tests.gateway.conftest import (
    OpenSsh,
    SshKeyFiles,
    make_key,
    openssh_for,
    register_key,
    text_of,
)
from tests.harness import Harness
from tests.live import DOCKYARD, LiveServer, free_port

pytestmark = pytest.mark.timeout(180)


def _workspace(h: Harness, client: Client, name: str = "dev") -> m.Workspace:
    try:
        h.admin.get_template("tmpl")
    except Exception:  # noqa: BLE001 - any failure means "push it"
        h.template(name="tmpl")
    created = client.create_workspace(m.CreateWorkspaceRequest(template="tmpl", name=name))
    ready = client.get_workspace(created.id, wait="ready", timeout=60)
    assert ready.agent is not None, ready
    assert ready.agent.lifecycle == m.AgentLifecycle.READY, ready
    return ready


def _denied(h: Harness, path: str, token: str | None) -> WebSocketDenialResponse:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with pytest.raises(WebSocketDenialResponse) as info, h.http().websocket_connect(path, headers=headers):
        pass
    return info.value


# --- the route --------------------------------------------------------------------------------------------


def test_agent_stream_route_needs_deployment_admin(ah: Harness) -> None:
    ws = _workspace(ah, ah.admin)
    path = f"/api/v2/workspaces/{ws.id}/agent/stream?kind=file_stat&params=%7B%22path%22%3A%22.%22%7D"
    assert _denied(ah, path, None).status_code == 401
    # Everything a workspace owner may do, but not deployment:admin.
    connect_only = ah.user("admin", scopes=[m.Scope.WORKSPACE_READ, m.Scope.WORKSPACE_CONNECT])
    refused = _denied(ah, path, connect_only.token)
    assert refused.status_code == 403
    assert "deployment:admin" in refused.json()["message"]
    # A member's role never has it, whatever the token says.
    member = ah.user("bob")
    assert _denied(ah, path, member.token).status_code == 403


def test_agent_stream_route_validates_kind_and_params(ah: Harness) -> None:
    ws = _workspace(ah, ah.admin)
    base = f"/api/v2/workspaces/{ws.id}/agent/stream"
    bad_kind = _denied(ah, f"{base}?kind=shell", ah.admin.token)
    assert bad_kind.status_code == 422
    assert bad_kind.json()["validations"][0]["field"] == "kind"
    for params in ("[1]", "not json", '{"stream":"x"}'):
        bad = _denied(ah, f"{base}?kind=exec&params={params}", ah.admin.token)
        assert bad.status_code == 422
        assert bad.json()["validations"][0]["field"] == "params"
    assert _denied(ah, "/api/v2/workspaces/nope/agent/stream?kind=exec", ah.admin.token).status_code == 404


def test_agent_stream_route_carries_frames_verbatim(ah: Harness) -> None:
    ws = _workspace(ah, ah.admin)
    params = urlencode({"kind": "exec", "params": json.dumps({"argv": ["sh", "-c", "cat; echo done >&2"]})})
    path = f"/api/v2/workspaces/{ws.id}/agent/stream?{params}"
    with ah.http().websocket_connect(path, headers={"Authorization": f"Bearer {ah.admin.token}"}) as conn:
        conn.send_bytes(_frame(frames.STDIN, b"typed\n") + _frame(frames.EOF))
        received = b""
        while True:
            message = conn.receive()
            if message["type"] == "websocket.close" or message.get("text"):
                break
            received += message["bytes"]
    parsed = _frames(received)
    assert (frames.STDOUT, b"typed\n") in parsed
    assert (frames.STDERR, b"done\n") in parsed
    assert json.loads(parsed[-1][1]) == {"type": "exit", "exit_code": 0, "signal": None}


def _frame(kind: int, payload: bytes = b"") -> bytes:
    return bytes([kind]) + len(payload).to_bytes(4, "big") + payload


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    found = []
    while data:
        length = int.from_bytes(data[1:5], "big")
        found.append((data[0], data[5 : 5 + length]))
        data = data[5 + length :]
    return found


# --- a RemoteHub gateway against an in-process server --------------------------------------------------------


@contextlib.contextmanager
def _served(h: Harness) -> Iterator[str]:
    """The harness's app on a loopback port, on the loop where its agent connections live."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(h.app, host="127.0.0.1", port=port, lifespan="off", log_config=None, access_log=False)
    )
    serving = h.lifespan.portal.start_task_soon(server.serve)
    deadline = time.monotonic() + 10
    while not server.started:
        assert not serving.done(), serving.exception()
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        serving.result(timeout=10)


@contextlib.contextmanager
def _remote_gateway(h: Harness, url: str) -> Iterator[Gateway]:
    settings = dataclasses.replace(h.settings, ssh_listen=f"127.0.0.1:{free_port()}")
    hub = RemoteHub(h.app.state.sessions, url, h.admin.token or "", refresh_interval=0.2)
    gateway = Gateway(h.app.state.sessions, hub, settings)
    portal = h.lifespan.portal
    portal.call(hub.start)
    portal.call(gateway.start)
    try:
        yield gateway
    finally:
        portal.call(gateway.close)
        portal.call(hub.close)


@pytest.fixture
def remote(ah: Harness) -> Iterator[Gateway]:
    with _served(ah) as url, _remote_gateway(ah, url) as gateway:
        yield gateway


def test_remote_hub_gateway(ah: Harness, remote: Gateway, tmp_path: Path) -> None:
    alice = ah.user("alice")
    key = make_key(tmp_path / "alice")
    register_key(alice, key)
    ws = _workspace(ah, alice)
    host, port = remote.settings.ssh_listen.rsplit(":", 1)
    ssh = openssh_for(ah.admin, tmp_path / "ssh", (host, int(port)))
    # The remote hub learns of the agent from the database, on its next refresh.
    deadline = time.monotonic() + 5
    while not remote.hub.connected(ws.id):
        assert time.monotonic() < deadline, "the gateway never saw the agent connected"
        time.sleep(0.05)
    assert text_of(ssh.run("dev", key, "echo hi; echo err >&2; exit 3")) == (3, "hi\n", "err\n")
    piped = ssh.run("dev", key, "wc -c", input=os.urandom(3 * 2**20 + 7))
    assert text_of(piped) == (0, f"{3 * 2**20 + 7}\n", "")
    upload = tmp_path / "up.txt"
    upload.write_text("carried by a remote hub\n")
    scp = ["scp", *ssh.options(key), "-P", str(ssh.port), str(upload), f"dev@{ssh.host}:up.txt"]
    pushed = subprocess.run(scp, capture_output=True, timeout=60)
    assert pushed.returncode == 0, pushed.stderr
    assert alice.read_file(ws.id, "up.txt") == b"carried by a remote hub\n"
    assert alice.get_workspace(ws.id).last_used_at is not None


def test_remote_hub_refusals(ah: Harness, remote: Gateway) -> None:
    """The server's refusals come back as the same errors the in-process hub raises."""
    hub = remote.hub
    assert isinstance(hub, RemoteHub)
    portal = ah.lifespan.portal
    with pytest.raises(NotFound):
        portal.call(lambda: hub.open("nope", "exec", argv=["true"]))
    ws = _workspace(ah, ah.admin)
    with pytest.raises(ValidationFailed) as invalid:
        portal.call(lambda: hub.open(ws.id, "shell"))
    assert invalid.value.validations[0].field == "kind"
    ah.admin.create_build(ws.id, m.CreateBuildRequest(transition=m.Transition.STOP))
    ah.await_build(ws.id)
    deadline = time.monotonic() + 10
    while hub.connected(ws.id):
        assert time.monotonic() < deadline, "the stopped workspace's agent still counts as connected"
        time.sleep(0.1)
    with pytest.raises(AgentUnavailable) as info:
        portal.call(lambda: hub.open(ws.id, "exec", argv=["true"]))
    assert info.value.message == "The workspace's agent is not connected."


def test_remote_dial_passes_half_closes_and_closes_on(ah: Harness, remote: Gateway) -> None:
    """A dial's half-close crosses the WebSocket both ways, and closing the stream reaches the connection in the
    workspace too."""
    hub = remote.hub
    ws = _workspace(ah, ah.admin)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: list[bytes] = []

    def serve() -> None:
        # First connection: answer once the client finished sending. Second: report when the client left.
        for _ in range(2):
            conn, _ = listener.accept()
            with conn:
                received = b""
                while data := conn.recv(65536):
                    received += data
                seen.append(received)
                with contextlib.suppress(OSError):
                    conn.sendall(received.upper())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    async def half_close() -> tuple[dict[str, object], bytes]:
        stream = await hub.open(ws.id, "dial", host="127.0.0.1", port=port)
        answer = await stream.read_json()
        stream.writer.write(b"hello")
        stream.writer.write_eof()
        data = await asyncio.wait_for(stream.reader.read(), 10)
        await stream.close()
        return answer, data

    async def full_close() -> None:
        stream = await hub.open(ws.id, "dial", host="127.0.0.1", port=port)
        assert (await stream.read_json())["type"] == "ok"
        stream.writer.write(b"bye")
        await stream.writer.drain()
        await stream.close()

    try:
        assert ah.lifespan.portal.call(half_close) == ({"type": "ok"}, b"HELLO")
        ah.lifespan.portal.call(full_close)
        thread.join(10)
        assert seen == [b"hello", b"bye"]
    finally:
        listener.close()


# --- `dockyard gateway` next to a real server ---------------------------------------------------------------


@dataclasses.dataclass
class GatewayProcess:
    port: int
    process: subprocess.Popen[bytes]
    log: Path


def _start_gateway(live: LiveServer, folder: Path, token: str, *, wait: bool = True) -> GatewayProcess:
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    token_file = folder / "gateway-token"
    token_file.write_text(token + "\n")
    log = folder / "gateway.log"
    process = subprocess.Popen(
        [
            DOCKYARD,
            "gateway",
            "--listen",
            f"127.0.0.1:{port}",
            "--url",
            live.url,
            "--token-file",
            str(token_file),
        ],
        env={**live.env, "DOCKYARD_DATA_DIR": str(live.data_dir)},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    if wait:
        deadline = time.monotonic() + 30
        while "ssh gateway started" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    return GatewayProcess(port, process, log)


def _stop(gateway: GatewayProcess) -> None:
    gateway.process.send_signal(signal.SIGTERM)
    try:
        gateway.process.wait(30)
    except subprocess.TimeoutExpired:
        gateway.process.kill()


@pytest.fixture(scope="module")
def standalone(live: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gateway = _start_gateway(live, tmp_path_factory.mktemp("gateway"), live.token)
    try:
        yield gateway
    finally:
        _stop(gateway)


@pytest.mark.docker
@pytest.mark.timeout(600)
def test_standalone_gateway_process(live: LiveServer, standalone: GatewayProcess, tmp_path: Path) -> None:
    ws = live.workspace("dev")
    key = make_key(tmp_path / "admin")
    register_key(live.client, key)
    ssh: OpenSsh = openssh_for(live.client, tmp_path / "ssh", ("127.0.0.1", standalone.port))
    assert text_of(ssh.run("dev", key, "echo hi; exit 3")) == (3, "hi\n", "")
    upload = tmp_path / "small.txt"
    upload.write_text("through the standalone gateway\n")
    scp = ["scp", *ssh.options(key), "-P", str(ssh.port), str(upload), "dev@127.0.0.1:small.txt"]
    pushed = subprocess.run(scp, capture_output=True, timeout=120)
    assert pushed.returncode == 0, pushed.stderr
    assert live.client.read_file(ws.id, "small.txt") == b"through the standalone gateway\n"
    _local_forward(ssh, key)


@pytest.mark.docker
@pytest.mark.timeout(600)
def test_standalone_gateway_starts_a_stopped_workspace(
    live: LiveServer, standalone: GatewayProcess, tmp_path: Path
) -> None:
    # The build is queued from the gateway's process and run by the server's workers, through the database.
    ws = live.workspace("dev")
    key = make_key(tmp_path / "admin")
    register_key(live.client, key, name="second")
    ssh = openssh_for(live.client, tmp_path / "ssh", ("127.0.0.1", standalone.port))
    live.client.create_build(ws.id, m.CreateBuildRequest(transition=m.Transition.STOP))
    assert live.client.get_workspace(ws.id, wait="done", timeout=120).status == m.WorkspaceStatus.STOPPED
    result = ssh.run("dev", key, "echo back", timeout=300)
    assert text_of(result) == (0, "back\n", "dockyard: workspace dev is stopped; starting it…\n"), (
        result.stderr
    )


def _local_forward(ssh: OpenSsh, key: SshKeyFiles) -> None:
    local = free_port()
    serve = (
        "mkdir -p site && echo from-the-container > site/index.html && "
        "exec python3 -m http.server 8124 --bind 127.0.0.1 --directory site"
    )
    process = subprocess.Popen(
        ssh.ssh("dev", key, serve, options=("-L", f"127.0.0.1:{local}:127.0.0.1:8124")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        body = b""
        deadline = time.monotonic() + 60
        while not body and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{local}/index.html", timeout=5) as response:
                    body = response.read()
            except OSError:
                time.sleep(0.5)
        assert body == b"from-the-container\n"
    finally:
        process.terminate()
        process.wait(30)


@pytest.mark.docker
@pytest.mark.timeout(600)
def test_standalone_gateway_refuses_a_token_without_deployment_admin(
    live: LiveServer, tmp_path: Path
) -> None:
    created = live.client.create_token(
        m.CreateTokenRequest(name="not-admin", scopes=[m.Scope.WORKSPACE_CONNECT, m.Scope.WORKSPACE_READ])
    )
    gateway = _start_gateway(live, tmp_path, created.key, wait=False)
    try:
        assert gateway.process.wait(60) == 1
    finally:
        if gateway.process.poll() is None:
            gateway.process.kill()
    output = gateway.log.read_text()
    assert "error: " in output
    assert "deployment:admin" in output
    missing = subprocess.run(
        [DOCKYARD, "gateway", "--listen", f"127.0.0.1:{free_port()}", "--url", live.url],
        env={
            **{k: v for k, v in live.env.items() if k != "DOCKYARD_GATEWAY_TOKEN"},
            "DOCKYARD_DATA_DIR": str(live.data_dir),
        },
        capture_output=True,
        timeout=60,
    )
    assert missing.returncode == 1
    assert missing.stderr.decode().startswith("error: the gateway needs an API token")
