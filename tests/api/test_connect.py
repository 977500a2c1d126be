"""Exec, files, terminals and dials through the API, to the real agent running as a local process.

The same paths through Docker containers are in tests/e2e/test_agent_docker.py.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from dockyard_sdk import ApiError
from dockyard_sdk import models as m
from tests.fakes import FakeRuntime
from tests.harness import Harness

pytestmark = pytest.mark.timeout(60)


def _error(call: Callable[[], Any]) -> ApiError:
    with pytest.raises(ApiError) as info:
        call()
    return info.value


def _ready(h: Harness, name: str = "ws", **manifest: Any) -> m.Workspace:
    h.template(name="tmpl", **manifest)
    created = h.admin.create_workspace(m.CreateWorkspaceRequest(template="tmpl", name=name))
    ws = h.admin.get_workspace(created.id, wait="ready", timeout=30)
    assert ws.agent is not None, ws
    return ws


def _auth(h: Harness) -> dict[str, str]:
    return {"Authorization": f"Bearer {h.admin.token}"}


def test_agent_connects_runs_the_startup_script_and_reports(ah: Harness) -> None:
    ws = _ready(ah, startup_script="echo hello from {{ workspace.name }}; echo to stderr >&2")
    assert ws.agent is not None
    assert ws.agent.status == m.AgentConnection.CONNECTED
    assert ws.agent.lifecycle == m.AgentLifecycle.READY
    assert ws.agent.version
    assert ws.agent.ready_at is not None
    assert ws.agent.started_at is not None
    lines = [(line.stage, line.output) for line in ah.admin.build_logs(ws.latest_build.id)]
    assert ("startup_script", "hello from ws") in lines
    assert ("startup_script", "to stderr") in lines


def test_failing_startup_script_is_start_error_with_exit_code(ah: Harness) -> None:
    ws = _ready(ah, startup_script="echo broken; exit 3")
    assert ws.agent is not None
    assert (ws.agent.lifecycle, ws.agent.exit_code) == (m.AgentLifecycle.START_ERROR, 3)


def test_startup_timeout(ah: Harness) -> None:
    ws = _ready(ah, startup_script="sleep 30", startup_timeout="1s")
    assert ws.agent is not None
    assert ws.agent.lifecycle == m.AgentLifecycle.START_TIMEOUT


def test_exec_separates_streams_and_keeps_exit_code(ah: Harness) -> None:
    ws = _ready(ah)
    result = ah.admin.exec(ws.id, m.ExecRequest(command="echo out; echo err >&2; exit 7"))
    assert (result.exit_code, result.stdout, result.stderr) == (7, "out\n", "err\n")
    argv = ah.admin.exec(
        ws.id, m.ExecRequest(command=["sh", "-c", 'printf %s "$0:$X"', "a b"], env={"X": "1"})
    )
    assert argv.stdout == "a b:1"
    piped = ah.admin.exec(ws.id, m.ExecRequest(command=["cat"], stdin="fed in"))
    assert piped.stdout == "fed in"
    after = ah.admin.get_workspace(ws.id)
    assert after.last_used_at is not None


def test_exec_missing_command_is_127_not_a_server_error(ah: Harness) -> None:
    ws = _ready(ah)
    result = ah.admin.exec(ws.id, m.ExecRequest(command=["no-such-program-here"]))
    assert result.exit_code == 127
    assert "no-such-program-here" in result.stderr


def test_exec_timeout_keeps_partial_output(ah: Harness) -> None:
    ws = _ready(ah)
    result = ah.admin.exec(ws.id, m.ExecRequest(command="echo started; sleep 30", timeout=1))
    assert result.timed_out
    assert result.exit_code is None
    assert result.stdout == "started\n"


def test_exec_output_is_bounded_with_a_flag(ah: Harness) -> None:
    ws = _ready(ah)
    result = ah.admin.exec(ws.id, m.ExecRequest(command="head -c 5000 /dev/zero", max_output_bytes=1000))
    assert len(result.stdout) == 1000
    assert result.stdout_truncated
    assert not result.stderr_truncated


def test_exec_binary_output_in_base64_or_flagged_lossy(ah: Harness) -> None:
    ws = _ready(ah)
    command = ["printf", "a\\377\\000b"]
    exact = ah.admin.exec(ws.id, m.ExecRequest(command=command, encoding="base64"))
    text = ah.admin.exec(ws.id, m.ExecRequest(command=command))
    assert (exact.stdout, exact.encoding, exact.lossy) == ("Yf8AYg==", "base64", False)
    assert (text.stdout, text.encoding, text.lossy) == ("a\ufffd\x00b", "utf-8", True)
    response = ah.admin.http.post(
        f"/api/v2/workspaces/{ws.id}/exec", json={"command": "true", "encoding": "latin-1"}
    )
    assert response.status_code == 422
    assert [v["field"] for v in response.json()["validations"]] == ["encoding"]


def test_reading_a_proc_file_returns_what_was_read(ah: Harness) -> None:
    ws = _ready(ah)
    response = ah.admin.http.get(f"/api/v2/workspaces/{ws.id}/files", params={"path": "/proc/self/status"})
    assert response.status_code == 200
    assert response.headers["x-file-size"] == "0"
    assert "content-length" not in response.headers or int(response.headers["content-length"]) == len(
        response.content
    )
    assert response.content.startswith(b"Name:")


def test_exec_on_stopped_workspace_is_409_with_the_status(ah: Harness) -> None:
    ws = _ready(ah)
    ah.admin.stop_workspace(ws.id)
    ah.await_build(ws.id)
    error = _error(lambda: ah.admin.exec(ws.id, m.ExecRequest(command="true")))
    assert error.status_code == 409
    assert "stopped" in error.message


def test_exec_bad_input_names_the_field(ah: Harness) -> None:
    ws = _ready(ah)
    response = ah.admin.http.post(f"/api/v2/workspaces/{ws.id}/exec", json={"command": []})
    assert response.status_code == 422
    assert response.json()["validations"][0]["field"] == "command"


def test_files_round_trip_list_and_errors(ah: Harness) -> None:
    ws = _ready(ah)
    data = bytes(range(256)) * 4096
    written = ah.admin.write_file(ws.id, "dir/sub/blob.bin", data)
    assert written.size == len(data)
    assert ah.admin.read_file(ws.id, "dir/sub/blob.bin") == data
    listing = ah.admin.list_files(ws.id, "dir/sub")
    assert [(e.name, e.type, e.size) for e in listing.entries] == [("blob.bin", "file", len(data))]
    missing = _error(lambda: ah.admin.read_file(ws.id, "nope.txt"))
    assert missing.status_code == 404
    assert "nope.txt" in missing.message
    not_dir = _error(lambda: ah.admin.list_files(ws.id, "dir/sub/blob.bin"))
    assert not_dir.status_code == 400
    ah.admin.delete_file(ws.id, "dir", recursive=True)
    assert _error(lambda: ah.admin.list_files(ws.id, "dir")).status_code == 404


def test_oversized_upload_is_413(ah: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    from dockyard.api.routes import connect

    ws = _ready(ah)
    monkeypatch.setattr(connect, "MAX_UPLOAD_BYTES", 1024)
    error = _error(lambda: ah.admin.write_file(ws.id, "big.bin", b"x" * 4096))
    assert error.status_code == 413
    assert _error(lambda: ah.admin.read_file(ws.id, "big.bin")).status_code == 404


def test_connect_scope_is_required(ah: Harness) -> None:
    ws = _ready(ah)
    reader = ah.user("admin", scopes=[m.Scope.WORKSPACE_READ])
    error = _error(lambda: reader.exec(ws.id, m.ExecRequest(command="true")))
    assert error.status_code == 403
    assert "workspace:connect" in error.message


def test_another_users_workspace_is_not_found(ah: Harness) -> None:
    ws = _ready(ah)
    bob = ah.user("bob")
    assert _error(lambda: bob.exec(ws.id, m.ExecRequest(command="true"))).status_code == 404
    assert _error(lambda: bob.read_file(ws.id, ".profile")).status_code == 404


def _ws_client(h: Harness) -> TestClient:
    return h.http()


def _connect(h: Harness, url: str, headers: dict[str, str]) -> None:
    with h.http().websocket_connect(url, headers=headers):
        pass


def test_exec_stream_over_websocket(ah: Harness) -> None:
    ws = _ready(ah)
    with _ws_client(ah).websocket_connect(
        f"/api/v2/workspaces/{ws.id}/exec/stream", headers=_auth(ah)
    ) as conn:
        conn.send_text(json.dumps({"command": "cat; echo done >&2"}))
        conn.send_bytes(b"typed\n")
        conn.send_text(json.dumps({"type": "eof"}))
        out, err, exit_message = b"", b"", None
        while exit_message is None:
            message = conn.receive()
            if message.get("bytes") is not None:
                tag, data = message["bytes"][:1], message["bytes"][1:]
                out, err = (out + data, err) if tag == b"\x01" else (out, err + data)
            elif message.get("text"):
                exit_message = json.loads(message["text"])
    assert (out, err, exit_message["exit_code"]) == (b"typed\n", b"done\n", 0)


def test_terminal_reattaches_and_replays_scrollback(ah: Harness) -> None:
    ws = _ready(ah)
    url = f"/api/v2/workspaces/{ws.id}/pty?reconnect=t1&width=100&height=30"
    client = _ws_client(ah)
    with client.websocket_connect(url, headers=_auth(ah)) as conn:
        conn.send_bytes(b"echo marker-$((6*7))\n")
        seen = b""
        while b"marker-42" not in seen:
            seen += conn.receive_bytes()
        conn.send_text(json.dumps({"type": "resize", "width": 120, "height": 40}))
        conn.send_bytes(b"stty size\n")
        while b"40 120" not in seen:
            seen += conn.receive_bytes()
    with client.websocket_connect(url, headers=_auth(ah)) as conn:
        replay = b""
        while b"marker-42" not in replay:
            replay += conn.receive_bytes()
        conn.send_bytes(b"exit\n")
        texts = []
        while (message := conn.receive())["type"] != "websocket.close":
            if message.get("text"):
                texts.append(json.loads(message["text"]))
        assert [t["type"] for t in texts] == ["exit"]


@pytest.fixture
def echo_server() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data.upper())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    server.close()


def test_dial_reaches_a_port_in_the_workspace(ah: Harness, echo_server: int) -> None:
    # The fake runtime's "workspace" is a local process, so its loopback is the test's loopback.
    ws = _ready(ah)
    with _ws_client(ah).websocket_connect(
        f"/api/v2/workspaces/{ws.id}/dial?port={echo_server}", headers=_auth(ah)
    ) as conn:
        conn.send_bytes(b"hello")
        assert conn.receive_bytes() == b"HELLO"


def test_dial_to_closed_port_is_a_clear_error(ah: Harness) -> None:
    ws = _ready(ah)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(WebSocketDenialResponse) as info:
        _connect(ah, f"/api/v2/workspaces/{ws.id}/dial?port={port}", _auth(ah))
    assert info.value.status_code == 400
    assert "Cannot connect" in info.value.json()["message"]


def test_websocket_refusals_are_json_errors(ah: Harness) -> None:
    ws = _ready(ah)
    with pytest.raises(WebSocketDenialResponse) as info:
        _connect(ah, f"/api/v2/workspaces/{ws.id}/pty", {})
    assert info.value.status_code == 401
    with pytest.raises(WebSocketDenialResponse) as info:
        _connect(ah, f"/api/v2/workspaces/{ws.id}/dial?port=0", _auth(ah))
    assert info.value.status_code == 422
    assert info.value.json()["validations"][0]["field"] == "port"


def test_agent_token_is_not_an_api_token(ah: Harness) -> None:
    ws = _ready(ah)
    fake = ah.runtime
    assert isinstance(fake, FakeRuntime)
    assert "DOCKYARD_AGENT_TOKEN" not in fake.plans[ws.id].env
    assert "DOCKYARD_AGENT_TOKEN" not in fake.agent_env[ws.id]
    token = (ah.settings.agent_links_dir / ws.id / "token").read_text().strip()
    assert token.startswith("dya_")
    response = ah.admin.http.get("/api/v2/workspaces", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
