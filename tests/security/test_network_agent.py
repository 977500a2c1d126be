"""The network agent link on real Docker workspaces (docs/SECURITY.md, "Agent identity", over the network).

A real `dockyard server` listens on docker0's address and gives workspaces `--agent-url` on it: their agents
dial it through their own bridge (the host firewall lets that one port through), and the server checks each
connection's source address against the container's address on its workspace network.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from dockyard_sdk import models as m
from tests.live import LiveServer, start_live_server, stop_live_server

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]

# docker0's address: local to the host, reachable from every workspace bridge (a packet to any host address
# arrives on the host's INPUT chain). Nothing leaves the machine.
HOST = "172.17.0.1"

# Asks for the agent link with TOKEN from inside a workspace; prints the status and the JSON error.
HANDSHAKE = """
import http.client, json, sys
conn = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=15)
conn.request("GET", "/api/v2/agents/link", headers={
    "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Authorization": "Bearer " + sys.stdin.read().strip()})
answer = conn.getresponse()
print(json.dumps({"status": answer.status, "body": answer.read().decode()}))
"""


@pytest.fixture(scope="module")
def netlive(base_image: str) -> Iterator[LiveServer]:
    server = start_live_server(subnets="10.219.0.0/16", host=HOST, env_extra={"DOCKYARD_AGENT_URL": "{url}"})
    try:
        yield server
    finally:
        stop_live_server(server)


def _address(live: LiveServer, ws: m.Workspace) -> str:
    result = live.client.exec(ws.id, m.ExecRequest(command=["hostname", "-i"]))
    return result.stdout.split()[0]


def test_agents_connect_over_the_network_from_their_own_address(netlive: LiveServer) -> None:
    ws = netlive.workspace("net-a")
    url = netlive.url
    env = netlive.client.exec(ws.id, m.ExecRequest(command=["printenv", "DOCKYARD_URL"]))
    assert env.stdout.strip() == url
    address = _address(netlive, ws)
    assert address.startswith("10.219.")
    connected = [
        json.loads(line)
        for line in netlive.log().splitlines()
        if line.startswith("{") and '"agent connected"' in line and ws.id in line
    ]
    assert connected, netlive.log()[-2000:]
    assert connected[-1]["origin"] == f"network from {address} of workspace {ws.id}"
    # Streams ride the network link too.
    netlive.client.write_file(ws.id, "over-the-network.txt", b"x" * 200_000)
    assert netlive.client.read_file(ws.id, "over-the-network.txt") == b"x" * 200_000
    result = netlive.client.exec(ws.id, m.ExecRequest(command="echo out; echo err >&2; exit 4"))
    assert (result.exit_code, result.stdout, result.stderr) == (4, "out\n", "err\n")


def test_a_token_used_from_another_workspace_is_refused_and_audited(netlive: LiveServer) -> None:
    alpha = netlive.workspace("net-a")
    beta = netlive.workspace("net-b")
    token = (netlive.data_dir / "agents" / alpha.id / "token").read_text().strip()
    port = netlive.url.rpartition(":")[2]
    before = netlive.client.audit(action="agent.refused", resource=alpha.id).audit_logs
    probe = netlive.client.exec(
        beta.id, m.ExecRequest(command=["python3", "-c", HANDSHAKE, HOST, port], stdin=token)
    )
    assert probe.exit_code == 0, probe.stderr
    answer = json.loads(probe.stdout)
    beta_address = _address(netlive, beta)
    assert answer["status"] == 403
    assert json.loads(answer["body"]) == {
        "message": "This agent connection is refused.",
        "detail": f"connection from {beta_address}, not from the workspace",
        "validations": [],
    }
    after = netlive.client.audit(action="agent.refused", resource=alpha.id).audit_logs
    assert len(after) == len(before) + 1
    assert after[0].detail["transport"] == f"network from {beta_address}"
    assert after[0].detail["claimed_workspace"] == alpha.id
    # Alpha's own agent is untouched and still answers.
    assert netlive.client.exec(alpha.id, m.ExecRequest(command=["true"])).exit_code == 0
