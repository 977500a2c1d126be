"""The hub's side of agent identity through its real sockets, with agents played by the test (fake runtime).

The Docker suite (tests/security/test_agent_identity.py) runs the same attacks from inside real containers;
here the timing cases are cheap to pin down: a half-open connection is replaced, a live one is not.
"""

from __future__ import annotations

import json
import socket
import stat
import struct
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from dockyard.runtimes.plan import LinkKind
from dockyard.store.models import AuditLog, WorkspaceAgent
from dockyard.tunnel.hub import AgentHub
from dockyard.tunnel.links import AgentLinks
from dockyard_sdk import models as m
from tests.harness import Harness

pytestmark = pytest.mark.timeout(120)


def _hub(h: Harness) -> AgentHub:
    hub = h.app.state.hub
    assert isinstance(hub, AgentHub)
    return hub


def _links(h: Harness) -> AgentLinks:
    return _hub(h).links


class Peer:
    """One connection to a workspace's hub socket, speaking frames."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(15)
        self.sock.connect(str(path))

    def send(self, message: dict[str, Any]) -> None:
        body = json.dumps(message).encode()
        self.sock.sendall(struct.pack(">BI", 1, len(body)) + body)

    def recv(self) -> dict[str, Any] | None:
        head = self._exactly(5)
        if head is None:
            return None
        _, size = struct.unpack(">BI", head)
        body = self._exactly(size)
        return None if body is None else json.loads(body)  # type: ignore[no-any-return]

    def _exactly(self, size: int) -> bytes | None:
        data = b""
        while len(data) < size:
            try:
                chunk = self.sock.recv(size - len(data))
            except OSError:  # reset by the hub, or closed by the test while a reader thread waits
                return None
            if not chunk:
                return None
            data += chunk
        return data

    def hello(self, token: str) -> dict[str, Any] | None:
        self.send({"type": "hello", "token": token, "version": "test", "protocol": 1})
        return self.recv()

    def answer_pings(self) -> threading.Thread:
        def serve() -> None:
            while (message := self.recv()) is not None:
                if message.get("type") == "ping":
                    self.send({"type": "pong"})

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self.sock.close()


def _token(h: Harness, workspace_id: str) -> str:
    return (_links(h).folder(workspace_id) / "token").read_text().strip()


def _refusals(h: Harness) -> list[AuditLog]:
    with h.app.state.sessions() as db:
        return list(db.scalars(select(AuditLog).where(AuditLog.action == "agent.refused")))


def test_each_workspace_gets_a_private_link(h: Harness) -> None:
    ws = h.workspace(name="alpha")
    links = _links(h)
    folder = links.folder(ws.id)
    assert sorted(p.name for p in folder.iterdir()) == ["hub.sock", "token"]
    assert stat.S_IMODE(links.root.stat().st_mode) == 0o700
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "token").stat().st_mode) == 0o600
    assert _token(h, ws.id) == _hub(h).token_for(ws.id)
    plan = h.runtime.plans[ws.id]  # type: ignore[attr-defined]
    assert plan.agent is not None
    assert plan.agent.link.kind == LinkKind.UNIX_SOCKET
    assert not any("TOKEN" in name for name in plan.env)
    # Where the Docker runtime mounts the folder is its own business (tests/runtimes/test_docker_units.py).
    assert h.runtime.agent_folders[1] / ws.id == folder  # type: ignore[attr-defined]
    h.admin.delete_workspace(ws.id)
    h.await_build(ws.id)
    assert not folder.exists()


def test_a_token_on_another_workspaces_socket_is_refused_and_audited(h: Harness) -> None:
    alpha = h.workspace(name="alpha")
    beta = h.workspace(name="beta")
    peer = Peer(_links(h).socket_path(beta.id))
    assert peer.hello(_token(h, alpha.id)) == {
        "type": "reject",
        "error": "this agent token belongs to another workspace",
    }
    assert peer.recv() is None
    rows = _refusals(h)
    assert [(r.resource_id, r.resource_name, r.username, r.status_code, r.detail) for r in rows] == [
        (
            beta.id,
            "beta",
            "agent",
            403,
            {
                "reason": "this agent token belongs to another workspace",
                "transport": "socket",
                "claimed_workspace": alpha.id,
            },
        )
    ]
    # A made-up token is refused the same way, and nobody got connected.
    other = Peer(_links(h).socket_path(beta.id))
    assert other.hello("dya_nothing_0") == {"type": "reject", "error": "unknown or revoked agent token"}
    assert not _hub(h).connected(alpha.id)
    assert not _hub(h).connected(beta.id)


def test_a_live_agent_is_not_displaced_but_a_half_open_one_is(h: Harness) -> None:
    ws = h.workspace(name="alpha")
    path = _links(h).socket_path(ws.id)
    token = _token(h, ws.id)
    first = Peer(path)
    welcome = first.hello(token)
    assert welcome is not None
    assert welcome["type"] == "welcome"
    assert welcome["workspace_id"] == ws.id
    first.answer_pings()
    second = Peer(path)
    assert second.hello(token) == {
        "type": "reject",
        "error": "another agent is already connected for this workspace",
    }
    assert [r.detail["reason"] for r in _refusals(h)] == [
        "another agent is already connected for this workspace"
    ]
    assert _hub(h).connected(ws.id)

    # The agent restarts: its old connection ends, and a new one takes its place.
    first.close()
    ghost = None
    for _ in range(50):
        ghost = Peer(path)
        reply = ghost.hello(token)
        assert reply is not None
        if reply["type"] == "welcome":
            break
        ghost.close()
        threading.Event().wait(0.2)
    assert ghost is not None
    # This one never answers (half-open as far as the hub can tell): a newcomer replaces it after one ping.
    newcomer = Peer(path)
    reply = newcomer.hello(token)
    assert reply is not None
    assert reply["type"] == "welcome"
    leftovers = []
    while (message := ghost.recv()) is not None:
        leftovers.append(message)
    assert leftovers == [{"type": "ping"}], "the replaced connection got one ping, then was closed"
    assert _hub(h).connected(ws.id)
    with h.app.state.sessions() as db:
        row = db.get(WorkspaceAgent, ws.id)
        assert row is not None
        assert row.connection == m.AgentConnection.CONNECTED


def test_a_link_made_by_another_process_is_listened_on(h: Harness) -> None:
    ws = h.workspace(name="alpha")
    links = AgentLinks(_links(h).root)  # as a separate `dockyard provisioner` process would make it
    path = links.socket_path(ws.id)
    path.unlink()
    links.prepare(ws.id, token=_token(h, ws.id), uid=1000)
    peer = None
    for _ in range(50):
        if path.exists():
            peer = Peer(path)
            break
        threading.Event().wait(0.1)
    assert peer is not None, "the hub's sweep did not listen in the new link"
    reply = peer.hello(_token(h, ws.id))
    assert reply is not None
    assert reply["type"] == "welcome"


def test_threads_preparing_one_link_at_once_each_leave_a_whole_token(tmp_path: Path) -> None:
    links = AgentLinks(tmp_path / "agents")
    tokens = [f"dya_ws1_{n:02d}" + "x" * 200 for n in range(16)]
    failures: list[BaseException] = []
    start = threading.Barrier(len(tokens))

    def prepare(token: str) -> None:
        start.wait()
        try:
            for _ in range(20):
                links.prepare("ws1", token=token, uid=1000)
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            failures.append(error)

    threads = [threading.Thread(target=prepare, args=(token,)) for token in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    folder = links.folder("ws1")
    assert sorted(p.name for p in folder.iterdir()) == ["token"]
    assert (folder / "token").read_text().strip() in tokens
