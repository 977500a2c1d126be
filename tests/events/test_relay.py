"""Streams relayed between replicas on one PostgreSQL database, with the real agent over the network link.

Replica A runs the workers and the agent connects to it; a client that reaches replica B gets exec, files and
terminal streams relayed through A (tunnel/replicas.py) instead of waiting for an agent B will never hold.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from dockyard.store.models import AgentSession, Replica
from dockyard.tunnel import replicas
from dockyard.warmpool.prebuild_pool import PrebuildPool
from dockyard_sdk import Client
from dockyard_sdk import models as m
from tests.harness import tar_gz
from tests.tunnel.listening import Listening, listening_harness

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]


@pytest.fixture
def pair(tmp_path: Path, database_url: str, db_kind: str) -> Iterator[tuple[Listening, Listening]]:
    if db_kind != "postgres":
        pytest.skip("replicas share a PostgreSQL database: run with --db postgres")
    (tmp_path / "a").mkdir()
    a = listening_harness(tmp_path / "a", database_url)
    (tmp_path / "b" / "data").mkdir(parents=True)
    (tmp_path / "b" / "data" / "admin-token").write_text((a.harness.data_dir / "admin-token").read_text())
    b = listening_harness(tmp_path / "b", database_url, agents=False, workers=0, agent_url="")
    yield a, b
    b.close()
    a.close()


def _ready(listening: Listening, name: str) -> m.Workspace:
    h = listening.harness
    template = h.template(name="tmpl")
    ws = h.admin.create_workspace(m.CreateWorkspaceRequest(template=template.name, name=name))
    ready = h.admin.get_workspace(ws.id, wait="ready", timeout=60)
    assert ready.agent is not None
    assert ready.agent.lifecycle == m.AgentLifecycle.READY
    return ready


def test_a_stream_reaching_the_replica_without_the_agent_is_relayed_to_the_one_holding_it(
    pair: tuple[Listening, Listening],
) -> None:
    a, b = pair
    ws = _ready(a, "relayed")
    with a.harness.app.state.sessions() as db:
        rows = {r.id: r.relay_url for r in db.scalars(select(Replica))}
        held = db.get(AgentSession, ws.id)
    assert rows == {a.hub.replica_id: a.url, b.hub.replica_id: b.url}
    assert held is not None
    assert held.replica_id == a.hub.replica_id
    assert ws.id in a.hub._agents
    assert ws.id not in b.hub._agents
    started = time.monotonic()
    result = b.harness.admin.exec(ws.id, m.ExecRequest(command="echo via-b; echo err >&2; exit 3"))
    assert (result.exit_code, result.stdout, result.stderr) == (3, "via-b\n", "err\n")
    assert time.monotonic() - started < 5  # not the 15 s wait for an agent B will never hold
    big = b.harness.admin.exec(ws.id, m.ExecRequest(command=["cat"], stdin="y" * 500_000))
    assert (big.exit_code, len(big.stdout)) == (0, 500_000)
    b.harness.admin.write_file(ws.id, "relayed.txt", b"through B")
    assert a.harness.admin.read_file(ws.id, "relayed.txt") == b"through B"
    assert b.harness.admin.read_file(ws.id, "relayed.txt") == b"through B"
    over_b = Client(b.url, b.harness.admin.token)
    with over_b.exec_stream(ws.id, m.ExecRequest(command=["cat"])) as stream:
        stream.write(b"interactive\n")
        stream.close_stdin()
        out, err, exited = stream.wait()
    assert (out, err, exited.exit_code) == (b"interactive\n", b"", 0)
    shown = b.harness.admin.get_workspace(ws.id)
    assert shown.agent is not None
    assert shown.agent.status == m.AgentConnection.CONNECTED


def test_the_relay_endpoint_takes_only_a_relay_token_for_that_workspace(
    pair: tuple[Listening, Listening],
) -> None:
    a, b = pair
    ws = _ready(a, "guarded")
    key = a.hub._relay_key
    url = f"{a.url}/api/v2/replicas/relay/{ws.id}?kind=exec&params=%7B%7D"
    wrong = [
        None,
        a.harness.admin.token,  # an API token, even an admin's
        replicas.relay_token(key, b.hub.replica_id, "another-workspace"),
        replicas.relay_token(key, b.hub.replica_id, ws.id, now=time.time() - 120),  # expired
        replicas.relay_token(b"not the deployment's key", b.hub.replica_id, ws.id),
    ]
    for token in wrong:
        answer = _handshake(url, token)
        assert answer.status_code == 401, token
        assert answer.json() == {
            "message": "A valid relay token is required.",
            "detail": "Only replicas relay agent streams.",
            "validations": [],
        }
    assert replicas.verify_relay_token(key, replicas.relay_token(key, "r1", ws.id), ws.id) == "r1"


def test_a_replica_that_stops_is_forgotten_and_its_agents_are_not_relayed_to(
    pair: tuple[Listening, Listening],
) -> None:
    a, b = pair
    ws = _ready(a, "left")
    assert b.hub.connected(ws.id) or _eventually(lambda: b.hub.connected(ws.id))
    with a.harness.app.state.sessions() as db:
        replicas.unregister(a.harness.app.state.sessions, a.hub.replica_id)
        assert db.get(AgentSession, ws.id) is None
    assert _eventually(lambda: not b.hub.connected(ws.id))


def _eventually(check: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def _handshake(url: str, token: str | None) -> httpx.Response:
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.get(url, headers=headers, timeout=10)


POOLED = """
name: pooled
image: dockyard/base:bookworm
env:
  GREETING: "hello {{ owner.username }}"
prebuilds:
  - {parameters: {}, instances: 1}
"""


def test_a_claim_taken_by_the_replica_without_the_agent_reaches_it_through_the_holder(
    pair: tuple[Listening, Listening],
) -> None:
    a, b = pair
    a.harness.admin.create_template(tar_gz({"dockyard.yaml": POOLED}))
    pool = a.harness.app.state.background.prebuild_pool
    assert isinstance(pool, PrebuildPool)
    deadline = time.monotonic() + 60
    while True:
        pool.fill()
        [preset] = a.harness.admin.prebuilds("pooled").presets
        if preset.ready == 1:
            break
        assert time.monotonic() < deadline, preset
        time.sleep(0.2)
    alice = b.harness.user("alice")
    ws = alice.create_workspace(m.CreateWorkspaceRequest(template="pooled", name="mine"))
    assert ws.latest_build.reason == m.BuildReason.CLAIM
    assert ws.id in a.hub._agents
    assert ws.id not in b.hub._agents
    ready = alice.get_workspace(ws.id, wait="ready", timeout=30)
    assert ready.agent is not None
    assert ready.agent.lifecycle == m.AgentLifecycle.READY
    # The owner's environment reached the agent on A when B took the claim: a session started now has it.
    result = alice.exec(ws.id, m.ExecRequest(command='echo "$DOCKYARD_WORKSPACE_OWNER $GREETING"'))
    assert (result.exit_code, result.stdout) == (0, "alice hello alice\n")
