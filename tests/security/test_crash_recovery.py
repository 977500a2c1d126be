"""Truthful after a crash: `kill -9` of a real `dockyard server` in the middle of a burst of creates, then a
restart on the same data dir. Builds the dead process held are taken back at once (not after the heartbeat
timeout: the recovery's log events come within seconds of the restart), and every workspace reaches `running` with its agent `ready`, so `?wait=ready` returns.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from dockyard_sdk import models as m
from tests.live import LiveServer, _await_healthy, _spawn, start_live_server, stop_live_server

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

# The figure; a slower machine may ask for fewer (the property is the same).
CREATES = int(os.environ.get("DOCKYARD_CRASH_CREATES", "30"))
# The dead server's builds are taken back this soon after the new one answers: at its start, not after the
# heartbeat timeout (`worker.stale_after`, 60 s). How long their starts then take is the host's speed, which
# bench/provision.py measures; here they only have to get there.
REQUEUED_WITHIN = 10.0


@pytest.fixture
def crashing(base_image: str) -> Iterator[LiveServer]:
    server = start_live_server(subnets="10.222.0.0/16")
    try:
        yield server
    finally:
        stop_live_server(server)


def _in_flight(live: LiveServer) -> dict[str, str]:
    """Workspace id -> build worker of every build left running, read from the dead server's database."""
    db = sqlite3.connect(f"file:{live.data_dir / 'dockyard.db'}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT workspace_id, worker FROM workspace_builds WHERE status = 'running'"
        ).fetchall()
    finally:
        db.close()
    return {str(workspace): str(worker) for workspace, worker in rows}


def _events(live: LiveServer) -> list[dict[str, object]]:
    events = []
    for line in live.log().splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict):
                events.append(event)
    return events


def _builds(live: LiveServer, workspace_ids: dict[str, str]) -> list[str]:
    return [live.client.get_workspace(w).latest_build.id for w in workspace_ids]


def test_kill_9_during_creates_then_restart(crashing: LiveServer) -> None:
    live = crashing
    ids = [
        live.client.create_workspace(m.CreateWorkspaceRequest(template="base", name=f"crash-{i}")).id
        for i in range(CREATES)
    ]
    # Wait until the server is busy: some done, several builds mid-flight.
    deadline = time.monotonic() + 120
    while True:
        statuses = [w.status for w in live.client.list_workspaces().workspaces]
        starting = statuses.count(m.WorkspaceStatus.STARTING)
        if starting >= 2 and statuses.count(m.WorkspaceStatus.RUNNING) >= 1:
            break
        assert time.monotonic() < deadline, statuses
        time.sleep(0.05)
    live.process.kill()
    live.process.wait(30)
    orphaned = _in_flight(live)
    assert orphaned, "the kill came after every build had finished; nothing to recover"

    live.process = _spawn(live.data_dir, live.url, live.ssh_port, live.env)
    _await_healthy(live)
    restarted, restarted_at = time.monotonic(), datetime.now(UTC)

    # The dead process's builds first: requeued at start, claimed before anything queued later.
    for workspace_id in orphaned:
        ws = live.client.get_workspace(workspace_id, wait="ready", timeout=180)
        assert ws.status == m.WorkspaceStatus.RUNNING, (ws.status, ws.status_reason)
        assert ws.agent is not None
        assert (ws.agent.status, ws.agent.lifecycle) == (m.AgentConnection.CONNECTED, m.AgentLifecycle.READY)
        assert ws.latest_build.number == 1
    recovered_in = time.monotonic() - restarted

    # Then every workspace reaches its true state, the ones that were done before the kill included.
    for workspace_id in ids:
        ws = live.client.get_workspace(workspace_id, wait="ready", timeout=180)
        assert ws.status == m.WorkspaceStatus.RUNNING, (ws.name, ws.status, ws.status_reason)
        assert ws.agent is not None
        assert ws.agent.lifecycle == m.AgentLifecycle.READY, (ws.name, ws.agent)
        assert ws.agent.status == m.AgentConnection.CONNECTED, (ws.name, ws.agent)
    # And they answer: each agent is connected to the new process.
    for workspace_id in list(orphaned)[:4]:
        result = live.client.exec(workspace_id, m.ExecRequest(command="echo alive"))
        assert result.stdout == "alive\n"
    recovered = [
        e
        for e in _events(live)
        if e.get("event") == "recovered build" and e.get("why") == "its process ended"
    ]
    assert {e["build"] for e in recovered} >= set(_builds(live, orphaned))
    for event in recovered:
        at = datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00"))
        assert (at - restarted_at).total_seconds() < REQUEUED_WITHIN, event
    print(
        f"{len(orphaned)} builds in flight at the kill; all running and ready {recovered_in:.1f} s after restart"
    )
