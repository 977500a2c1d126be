"""The network agent link (`/api/v2/agents/link`) with the real agent, through a real HTTP listener.

The fake runtime runs the real agent as a local process; with `agent_url` set, its environment carries
`DOCKYARD_URL`, so the agent dials uvicorn over loopback and upgrades to a WebSocket. The listener runs on the
harness's own event loop (where the hub lives), as `dockyard server` runs everything on one loop.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from dockyard.store.models import AuditLog
from dockyard.tunnel.hub import AgentHub
from dockyard_sdk import models as m
from tests.fakes import FakeRuntime
from tests.harness import Harness
from tests.tunnel.listening import listening_harness

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def net(tmp_path: Path, database_url: str) -> Iterator[Harness]:
    listening = listening_harness(tmp_path, database_url)
    yield listening.harness
    listening.close()


def _hub(h: Harness) -> AgentHub:
    hub = h.app.state.hub
    assert isinstance(hub, AgentHub)
    return hub


def _ready(h: Harness, workspace_id: str, timeout: float = 30) -> m.Workspace:
    ws = h.admin.get_workspace(workspace_id, wait="ready", timeout=timeout)
    assert ws.agent is not None
    return ws


def test_an_agent_with_a_url_connects_over_the_network_and_serves_streams(net: Harness) -> None:
    ws = net.admin.create_workspace(m.CreateWorkspaceRequest(template=net.template().name, name="netdev"))
    ready = _ready(net, ws.id)
    env = net.runtime.agent_env[ws.id]  # type: ignore[attr-defined]
    assert env["DOCKYARD_URL"] == net.settings.agent_url
    assert ready.agent is not None
    assert ready.agent.lifecycle == m.AgentLifecycle.READY
    # The fake cannot tell where connections come from: the token alone admitted it, and the hub says so.
    session = _hub(net)._agents[ws.id]
    assert session.origin.transport == "network (token only)"
    result = net.admin.exec(ws.id, m.ExecRequest(command="echo out; echo err >&2; exit 7"))
    assert (result.exit_code, result.stdout, result.stderr) == (7, "out\n", "err\n")
    piped = net.admin.exec(ws.id, m.ExecRequest(command=["cat"], stdin="x" * 300_000))
    assert (piped.exit_code, len(piped.stdout)) == (0, 300_000)
    net.admin.write_file(ws.id, "notes/a.txt", b"hello over the network")
    assert net.admin.read_file(ws.id, "notes/a.txt") == b"hello over the network"


def test_egress_none_keeps_the_socket(net: Harness) -> None:
    template = net.template(name="closed", network={"egress": "none"})
    ws = net.admin.create_workspace(m.CreateWorkspaceRequest(template=template.name, name="closed"))
    _ready(net, ws.id)
    env = net.runtime.agent_env[ws.id]  # type: ignore[attr-defined]
    assert "DOCKYARD_URL" not in env
    assert _hub(net)._agents[ws.id].origin.transport == "socket"


def test_a_connection_from_another_address_than_the_workspaces_is_refused_and_audited(net: Harness) -> None:
    runtime = net.runtime
    assert isinstance(runtime, FakeRuntime)
    # The runtime says the workspace's connections come from 10.0.0.2; the agent dials from 127.0.0.1.
    runtime.addresses = {}
    template = net.template()
    ws = net.admin.create_workspace(m.CreateWorkspaceRequest(template=template.name, name="elsewhere"))
    runtime.addresses[ws.id] = frozenset({"10.0.0.2"})
    net.await_build(ws.id)
    token = _hub(net).token_for(ws.id)
    url = f"ws://127.0.0.1:{net.settings.agent_url.rpartition(':')[2]}/api/v2/agents/link"
    refused = _handshake(url, token)
    assert refused.status_code == 403
    assert refused.json() == {
        "message": "This agent connection is refused.",
        "detail": "connection from 127.0.0.1, not from the workspace",
        "validations": [],
    }
    # The agent's own dial may have been refused a moment before ours: its row (one per minute and reason) can
    # still be on its way to the database when our 403 arrives.
    deadline = time.monotonic() + 5
    while True:
        with net.app.state.sessions() as db:
            audits = list(db.scalars(select(AuditLog).where(AuditLog.action == "agent.refused")))
        if audits or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [(a.resource_id, a.detail["claimed_workspace"]) for a in audits] == [(ws.id, ws.id)]
    assert audits[0].detail["transport"] == "network from 127.0.0.1"
    shown = net.admin.get_workspace(ws.id)
    assert shown.agent is None or shown.agent.status != m.AgentConnection.CONNECTED
    # Told the right address, the same agent is admitted (it re-dials on its own after its back-off).
    runtime.addresses[ws.id] = frozenset({"127.0.0.1"})
    _hub(net)._addresses.clear()
    ready = _ready(net, ws.id, timeout=30)
    assert ready.agent is not None
    assert ready.agent.status == m.AgentConnection.CONNECTED
    assert _hub(net)._agents[ws.id].origin.transport == "network from 127.0.0.1"


def test_bad_tokens_and_api_tokens_are_refused(net: Harness) -> None:
    url = f"ws://127.0.0.1:{net.settings.agent_url.rpartition(':')[2]}/api/v2/agents/link"
    missing = _handshake(url, None)
    assert (missing.status_code, missing.json()["message"]) == (401, "An agent token is required.")
    for token in ("dya_nosuch_0123", net.admin.token):
        refused = _handshake(url, token)
        assert refused.status_code == 403
        assert refused.json()["detail"] == "unknown or revoked agent token"


def _handshake(url: str, token: str | None) -> httpx.Response:
    """A raw upgrade request; the refusal is an HTTP answer with the API's JSON error."""
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.get(url.replace("ws://", "http://"), headers=headers, timeout=10)


def test_the_agent_backs_off_with_full_jitter() -> None:
    from dockyard.agent import agent

    assert (agent.BACKOFF_MIN, agent.BACKOFF_MAX) == (0.5, 4.0)
    link = agent.Link("", ["http://a:1/", "http://b:2"])
    first = link.describe()
    link.next()
    assert {first, link.describe()} == {"http://a:1", "http://b:2"}
    with socket.socket() as sock:  # nothing listens: an unreachable replica is an OSError, not a refusal
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        asyncio.run(agent.ws_connect(f"http://127.0.0.1:{port}", "t"))
