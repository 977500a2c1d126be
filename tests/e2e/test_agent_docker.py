"""The agent inside real Docker workspaces, reached through a real `dockyard server` process."""

from __future__ import annotations

import contextlib
import json
import socket
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from dockyard_sdk import ApiError
from dockyard_sdk import models as m
from tests.harness import manifest_yaml, tar_gz
from tests.live import LiveServer

pytestmark = [pytest.mark.docker, pytest.mark.engine_only, pytest.mark.timeout(300)]


def _sh(live: LiveServer, ws: m.Workspace, command: str, **kwargs: object) -> m.ExecResult:
    return live.client.exec(ws.id, m.ExecRequest(command=command, **kwargs))  # type: ignore[arg-type]


def test_agent_runs_as_the_workspace_user_and_reports_state(live: LiveServer) -> None:
    ws = live.workspace("dev")
    assert ws.agent is not None
    assert ws.agent.status == m.AgentConnection.CONNECTED
    assert ws.agent.version
    result = _sh(
        live, ws, "id -u; echo $HOME; test -w /run/dockyard/agent.py && echo writable || echo read-only"
    )
    assert result.stdout.split() == ["1000", "/home/dev", "read-only"], result
    deadline = time.monotonic() + 30
    while True:
        agent = live.client.get_workspace(ws.id).agent
        assert agent is not None
        if agent.stats is not None and agent.stats.memory_bytes:
            break
        assert time.monotonic() < deadline, "no stats reported"
        time.sleep(1)
    assert agent.stats.disk_total_bytes
    assert agent.stats.memory_limit_bytes == 4 * 2**30


def test_exec_and_files_in_a_container(live: LiveServer) -> None:
    ws = live.workspace("dev")
    missing = _sh(live, ws, "definitely-not-a-command")
    assert missing.exit_code == 127
    assert "not found" in missing.stderr
    live.client.write_file(ws.id, "notes/today.txt", b"written through the API\n")
    assert _sh(live, ws, "cat ~/notes/today.txt; stat -c %U ~/notes/today.txt").stdout == (
        "written through the API\ndev\n"
    )
    with pytest.raises(ApiError) as denied:
        live.client.read_file(ws.id, "/etc/shadow")
    assert denied.value.status_code == 403
    assert "Permission denied" in denied.value.message
    assert [e.name for e in live.client.list_files(ws.id, "notes").entries] == ["today.txt"]


def test_ports_the_workspace_listens_on_are_reported(live: LiveServer) -> None:
    ws = live.workspace("dev")
    _sh(live, ws, "nohup python3 -m http.server 8765 --bind 127.0.0.1 >/dev/null 2>&1 &")
    deadline = time.monotonic() + 40
    while True:
        agent = live.client.get_workspace(ws.id).agent
        assert agent is not None
        if 8765 in [p.port for p in agent.ports]:
            break
        assert time.monotonic() < deadline, agent.ports
        time.sleep(1)


def test_terminal_over_a_real_websocket(live: LiveServer) -> None:
    ws = live.workspace("dev")
    url = (
        live.url.replace("http://", "ws://")
        + f"/api/v2/workspaces/{ws.id}/pty?reconnect=e2e&width=90&height=20"
    )
    headers = {"Authorization": f"Bearer {live.token}"}
    with ws_connect(url, additional_headers=headers) as conn:
        conn.send(b"echo $((40+2))-$TERM; stty size\n")
        seen = b""
        while b"20 90" not in seen:
            seen += conn.recv(timeout=10)  # type: ignore[operator]
        assert b"42-xterm-256color" in seen
    with ws_connect(url, additional_headers=headers) as conn:
        replay = b""
        while b"42-xterm" not in replay:
            replay += conn.recv(timeout=10)  # type: ignore[operator]
        conn.send(b"exit\n")
        messages: list[str | bytes] = []
        with contextlib.suppress(ConnectionClosed):
            while True:
                messages.append(conn.recv(timeout=10))
    assert any(isinstance(x, str) and json.loads(x)["type"] == "exit" for x in messages)


def test_a_forged_agent_token_is_rejected_from_inside_a_workspace(live: LiveServer) -> None:
    victim = live.workspace("dev")
    attacker = live.workspace("other")
    # From inside `other`, speak the agent protocol on the mounted socket as if it were `dev`'s agent.
    probe = f"""
import json, socket, struct
# The workspace's own socket and token; graft the victim's id onto its own secret.
s = socket.socket(socket.AF_UNIX); s.connect("/run/dockyard/link/hub.sock")
own = open("/run/dockyard/link/token").read().strip()
forged = "dya_{victim.id}_" + own.rsplit("_", 1)[1]
body = json.dumps({{"type": "hello", "token": forged, "version": "x", "protocol": 1}}).encode()
s.sendall(struct.pack(">BI", 1, len(body)) + body)
kind, size = struct.unpack(">BI", s.recv(5)); print(json.loads(s.recv(size))["type"])
"""
    result = live.client.exec(attacker.id, m.ExecRequest(command=["python3", "-c", probe]))
    assert result.stdout.strip() == "reject", result
    assert live.client.get_workspace(victim.id).agent.status == m.AgentConnection.CONNECTED  # type: ignore[union-attr]


def test_agent_redials_after_the_server_restarts(live: LiveServer) -> None:
    ws = live.workspace("dev")
    live.restart()
    # The agent re-dials within its backoff (at most 2 s); the exec waits for it.
    assert _sh(live, ws, "echo back").stdout == "back\n"


def test_workspace_without_network_is_reachable_through_the_socket(live: LiveServer) -> None:
    live.client.create_template(
        tar_gz(
            {"dockyard.yaml": manifest_yaml(name="offline", network={"egress": "none"}, startup_script="")}
        )
    )
    ws = live.workspace("sealed", template="offline")
    assert _sh(live, ws, "echo inside").stdout == "inside\n"


@pytest.mark.parametrize(
    ("name", "python"),
    [
        ("nopython", "RUN rm -f /usr/bin/python3*"),
        # Told by the interpreter's file name, without running it.
        (
            "oldpython",
            "RUN rm /usr/bin/python3 && printf '#!/bin/sh\\n' > /usr/local/bin/python3.8"
            " && chmod +x /usr/local/bin/python3.8 && ln -s /usr/local/bin/python3.8 /usr/bin/python3",
        ),
        # A name that tells nothing: the interpreter is asked, and this one fails the question.
        (
            "oddpython",
            "RUN rm /usr/bin/python3 && printf '#!/bin/sh\\nexit 1\\n' > /usr/bin/python3"
            " && chmod +x /usr/bin/python3",
        ),
    ],
)
def test_image_without_python_fails_the_build_saying_why(live: LiveServer, name: str, python: str) -> None:
    dockerfile = f"FROM dockyard/base:bookworm\n{python}\n"
    manifest = manifest_yaml(name=name, image=None, build={"dockerfile": "Dockerfile"}, startup_script="")
    live.client.create_template(tar_gz({"dockyard.yaml": manifest, "Dockerfile": dockerfile}))
    created = live.client.create_workspace(m.CreateWorkspaceRequest(template=name, name=name))
    ws = live.client.get_workspace(created.id, wait="done", timeout=240)
    assert ws.status == m.WorkspaceStatus.FAILED
    assert "no python3 3.9 or newer" in ws.status_reason


def test_stop_and_start_reconnects_and_keeps_home(live: LiveServer) -> None:
    ws = live.workspace("dev")
    live.client.write_file(ws.id, "kept.txt", b"still here")
    live.client.stop_workspace(ws.id)
    stopped = live.client.get_workspace(ws.id, wait="done", timeout=60)
    assert stopped.agent is not None
    assert stopped.agent.status == m.AgentConnection.DISCONNECTED
    with pytest.raises(ApiError) as refused:
        _sh(live, ws, "true")
    assert refused.value.status_code == 409
    live.client.start_workspace(ws.id)
    ready = live.client.get_workspace(ws.id, wait="ready", timeout=60)
    assert ready.agent is not None
    assert ready.agent.lifecycle == m.AgentLifecycle.READY
    assert live.client.read_file(ws.id, "kept.txt") == b"still here"


def test_websocket_clients_that_vanish_are_not_errors(live: LiveServer) -> None:
    ws = live.workspace("dev")
    base = live.url.replace("http://", "ws://") + f"/api/v2/workspaces/{ws.id}"
    headers = {"Authorization": f"Bearer {live.token}"}
    logged = len(live.log().splitlines())

    def vanish(path: str, *first: str | bytes, read: bool = True) -> None:
        with ws_connect(base + path, additional_headers=headers) as conn:
            for message in first:
                conn.send(message)
            if read:
                conn.recv(timeout=10)
            # Gone without a close frame, while output is still flowing (a laptop lid, a killed client).
            conn.socket.shutdown(socket.SHUT_RDWR)

    vanish("/exec/stream", json.dumps({"command": "yes"}))
    vanish("/pty?reconnect=vanish", b"yes\n")
    vanish("/exec/stream", read=False)
    vanish("/exec/stream", json.dumps({"command": "sleep 30", "timeout": 1}), read=False)
    time.sleep(3)
    assert _sh(live, ws, "echo still").stdout == "still\n"
    events = [json.loads(line) for line in live.log().splitlines()[logged:] if line.startswith("{")]
    problems = [e for e in events if e.get("level") in ("error", "critical", "warning")]
    assert problems == [], problems
