"""An agent connection belongs to its workspace (docs/SECURITY.md, "Agent identity"), on real Docker workspaces
served by a real `dockyard server` process.

Each workspace mounts its own link folder (hub socket and token) at /run/dockyard/link; the tests speak the agent
protocol from inside workspaces as an attacker would, with the real token of another workspace.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import docker
import pytest

from dockyard_sdk import ApiError
from dockyard_sdk import models as m
from tests.live import LiveServer

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]

LINK = "/run/dockyard/link"

# Speaks one message of the agent protocol on the workspace's own hub socket and prints the first reply (or
# "closed"). TOKEN and MESSAGE are filled in by the test.
PROBE = """
import json, socket, struct
message = json.loads(MESSAGE)
message["token"] = TOKEN
s = socket.socket(socket.AF_UNIX)
s.settimeout(20)
s.connect("/run/dockyard/link/hub.sock")
body = json.dumps(message).encode()
s.sendall(struct.pack(">BI", 1, len(body)) + body)
head = s.recv(5)
if len(head) < 5:
    print(json.dumps({"type": "closed"}))
else:
    kind, size = struct.unpack(">BI", head)
    data = b""
    while len(data) < size:
        data += s.recv(size - len(data))
    print(data.decode())
"""


# Looks for a secret (read from stdin) in every file a workspace user can read where a token could be.
SCAN = """
import os, sys
secret = sys.stdin.read().strip().encode()
assert len(secret) > 20
me = str(os.getpid())
hits = []
for top in ("/run", "/etc", "/tmp", "/home", "/root", "/proc"):
    for root, dirs, files in os.walk(top):
        if root == "/proc":
            dirs[:] = [d for d in dirs if d.isdigit() and d != me]
            files = []
        elif root.startswith("/proc/"):
            dirs[:] = []
            files = [f for f in files if f in ("environ", "cmdline")]
        for name in files:
            path = os.path.join(root, name)
            try:
                with open(path, "rb") as handle:
                    data = handle.read(1 << 20)
            except OSError:
                continue
            if secret in data:
                hits.append(path)
print("\\n".join(hits) or "scanned")
"""


def _token(live: LiveServer, ws: m.Workspace) -> str:
    return (live.data_dir / "agents" / ws.id / "token").read_text().strip()


def _probe(live: LiveServer, ws: m.Workspace, token: str, message: dict[str, object]) -> dict[str, object]:
    script = PROBE.replace("MESSAGE", repr(json.dumps(message))).replace("TOKEN", repr(token))
    result = live.client.exec(ws.id, m.ExecRequest(command=["python3", "-c", script]))
    assert result.exit_code == 0, result
    reply = json.loads(result.stdout)
    assert isinstance(reply, dict)
    return reply


def _hello(token_note: str = "") -> dict[str, object]:
    return {"type": "hello", "version": f"attacker{token_note}", "protocol": 1, "pid": 1}


def _refusals(live: LiveServer, ws: m.Workspace) -> list[m.AuditLog]:
    return live.client.audit(action="agent.refused", resource=ws.id).audit_logs


def _hostname(live: LiveServer, ws: m.Workspace) -> str:
    return live.client.exec(ws.id, m.ExecRequest(command=["hostname"])).stdout.strip()


def test_another_workspaces_token_is_refused_and_audited(live: LiveServer) -> None:
    alice = live.workspace("alice-ws")
    bob = live.workspace("bob-ws")
    before = live.client.get_workspace(alice.id).agent
    assert before is not None
    stolen = _token(live, alice)
    assert stolen.startswith(f"dya_{alice.id}_")

    # From inside bob's workspace, with alice's real token: as alice's agent, and as a stream of hers.
    reply = _probe(live, bob, stolen, _hello())
    assert reply == {"type": "reject", "error": "this agent token belongs to another workspace"}
    attach = _probe(live, bob, stolen, {"type": "attach", "stream": "x" * 24})
    assert attach == {"type": "reject", "error": "this agent token belongs to another workspace"}

    # Audited in the workspace the attempt came from, naming the workspace it claimed.
    rows = _refusals(live, bob)
    assert rows, "no audit row for the refusal"
    assert (rows[0].username, rows[0].resource_type, rows[0].resource_name, rows[0].status_code) == (
        "agent",
        "workspace",
        "bob-ws",
        403,
    )
    assert rows[0].detail == {
        "reason": "this agent token belongs to another workspace",
        "transport": "socket",
        "claimed_workspace": alice.id,
    }
    assert _refusals(live, alice) == []

    # Nothing changed for alice: her real agent still holds the connection and answers her exec.
    after = live.client.get_workspace(alice.id).agent
    assert after is not None
    assert after.status == m.AgentConnection.CONNECTED
    assert after.last_connected_at == before.last_connected_at
    assert after.version == before.version != "attacker"
    assert _hostname(live, alice) == "alice-ws"
    assert _hostname(live, bob) == "bob-ws"


def test_a_workspace_sees_only_its_own_link(live: LiveServer) -> None:
    alice = live.workspace("alice-ws")
    bob = live.workspace("bob-ws")
    listing = live.client.exec(bob.id, m.ExecRequest(command=["ls", "-A", LINK])).stdout.split()
    assert listing == ["hub.sock", "token"]
    own = live.client.exec(bob.id, m.ExecRequest(command=["cat", f"{LINK}/token"])).stdout.strip()
    assert own == _token(live, bob) != _token(live, alice)
    # Alice's token is nowhere bob can read: not in his link, environment, files or processes. (The secret
    # comes in on stdin so that the search's own command line does not contain it.)
    secret = _token(live, alice).rsplit("_", 1)[1]
    search = live.client.exec(bob.id, m.ExecRequest(command=["python3", "-c", SCAN], stdin=secret))
    assert search.exit_code == 0, search
    assert search.stdout.split() == ["scanned"], search
    # The link is read-only inside the workspace.
    write = live.client.exec(bob.id, m.ExecRequest(command=f"echo x > {LINK}/token"))
    assert write.exit_code != 0
    assert "Read-only file system" in write.stderr


def test_tokens_are_kept_out_of_the_environment_and_host_users(live: LiveServer) -> None:
    alice = live.workspace("alice-ws")
    bob = live.workspace("bob-ws")
    client = docker.from_env()
    try:
        for ws in (alice, bob):
            attrs = client.api.inspect_container(f"dockyard-ws-{ws.id}")
            env = attrs["Config"]["Env"]
            assert not [v for v in env if v.startswith("DOCKYARD_AGENT_TOKEN=")], env
            assert not [v for v in env if "dya_" in v], env
            assert f"DOCKYARD_AGENT_TOKEN_FILE={LINK}/token" in env
            # Only this workspace's link is mounted into it.
            links = [mt["Source"] for mt in attrs["Mounts"] if mt["Destination"] == LINK]
            assert links == [str(live.data_dir / "agents" / ws.id)]
            others = [
                mt for mt in attrs["Mounts"] if "/agents/" in mt["Source"] and mt["Destination"] != LINK
            ]
            assert others == []
    finally:
        client.close()
    # On the host: the links' parent is the server's alone; a link and its token are the workspace user's.
    root = live.data_dir / "agents"
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    folder = root / alice.id
    token = folder / "token"
    assert (stat.S_IMODE(folder.stat().st_mode), folder.stat().st_uid) == (0o700, 1000)
    assert (stat.S_IMODE(token.stat().st_mode), token.stat().st_uid) == (0o600, 1000)
    # A host user other than root and the workspace uid cannot read it (checked as uid 65534).
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only reports through its exit code
        try:
            os.setgid(65534)
            os.setuid(65534)
            token.read_text()
        except PermissionError:
            os._exit(0)
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "nobody could read a workspace's agent token"


def test_a_second_hello_is_refused_while_the_agent_answers(live: LiveServer) -> None:
    alice = live.workspace("alice-ws")
    before = live.client.get_workspace(alice.id).agent
    assert before is not None
    seen = len(_refusals(live, alice))
    # A process inside alice's own workspace, with her own (right) token, on her own socket.
    reply = _probe(live, alice, _token(live, alice), _hello())
    assert reply == {"type": "reject", "error": "another agent is already connected for this workspace"}
    rows = _refusals(live, alice)
    assert len(rows) == seen + 1
    assert rows[0].detail["reason"] == "another agent is already connected for this workspace"
    after = live.client.get_workspace(alice.id).agent
    assert after is not None
    assert after.status == m.AgentConnection.CONNECTED
    assert after.last_connected_at == before.last_connected_at
    assert _hostname(live, alice) == "alice-ws"


def test_a_killed_agent_is_reported_and_reconnects_after_a_start(live: LiveServer) -> None:
    ws = live.workspace("killed-ws")
    first = live.client.get_workspace(ws.id).agent
    assert first is not None
    # The agent is the workspace's workload (under docker-init): SIGKILL it from inside, as its own user.
    with pytest.raises(ApiError) as cut:
        live.client.exec(
            ws.id, m.ExecRequest(command="kill -KILL $(pgrep -u dev -f /run/dockyard/agent.py | head -n1)")
        )
    assert cut.value.message == "The agent closed the stream before the command exited."
    deadline = time.monotonic() + 60
    while True:
        current = live.client.get_workspace(ws.id)
        if current.status == m.WorkspaceStatus.FAILED:
            break
        assert time.monotonic() < deadline, current
        time.sleep(0.5)
    assert current.status_reason == "the container's workload was killed (SIGKILL)"
    assert current.agent is not None
    assert current.agent.status == m.AgentConnection.DISCONNECTED
    # A start brings the same container back; its new agent connects through the same private link.
    live.client.create_build(ws.id, m.CreateBuildRequest(transition=m.Transition.START))
    ready = live.client.get_workspace(ws.id, wait="ready", timeout=120)
    assert ready.status == m.WorkspaceStatus.RUNNING
    assert ready.agent is not None
    assert ready.agent.lifecycle == m.AgentLifecycle.READY
    assert ready.agent.status == m.AgentConnection.CONNECTED
    assert _hostname(live, ws) == "killed-ws"
    assert Path(live.data_dir / "agents" / ws.id / "hub.sock").exists()


def test_a_deleted_workspace_leaves_no_link(live: LiveServer) -> None:
    ws = live.workspace("gone-ws")
    folder = live.data_dir / "agents" / ws.id
    assert sorted(p.name for p in folder.iterdir()) == ["hub.sock", "token"]
    live.client.delete_workspace(ws.id)
    done = live.client.get_workspace(ws.id, wait="done", timeout=120)
    assert done.status == m.WorkspaceStatus.DELETED
    assert not folder.exists()
