"""Idle auto-stop and autostart on real Docker workspaces, with lifetimes of seconds.

The heartbeat and idle floor are shortened (module constants, in this process) so that the test runs in
seconds; what is tested is the real path: exec through the agent in a container, the task report tool inside
it, the leader's passes, and the stop build reaching the engine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import docker
import pytest

from dockyard.provisioner import lifetimes
from dockyard.runtimes.docker.naming import container_name
from dockyard.store.models import Workspace
from dockyard.tunnel import state
from dockyard_sdk import models as m
from tests.harness import Harness, tar_gz

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

MANIFEST = """
name: idle
image: dockyard/base:bookworm
resources: {cpu: 1, memory: 512Mi}
network: {egress: none}
# A background process alone is no activity.
startup_script: nohup sleep 600 >/dev/null 2>&1 &
lifetime: {idle_timeout: 4s}
"""


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "ACTIVITY_HEARTBEAT", 1.0)
    monkeypatch.setattr(state, "ACTIVITY_EVERY", timedelta(seconds=0.5))
    monkeypatch.setattr(lifetimes, "MIN_IDLE", timedelta(seconds=3))


@pytest.fixture
def ticking(dh: Harness) -> Iterator[None]:
    """The leader's loop, every half second (the harness's own loop is slowed to an hour)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(0.5):
            dh.app.state.background.tick()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(30)


def _running(client: docker.DockerClient, workspace_id: str) -> bool:
    container = client.containers.get(container_name(workspace_id))
    return bool(container.attrs["State"]["Running"])


def _await_status(dh: Harness, workspace_id: str, status: m.WorkspaceStatus, timeout: float) -> m.Workspace:
    deadline = time.monotonic() + timeout
    while True:
        current = dh.admin.get_workspace(workspace_id)
        if current.status == status and current.latest_build.status == m.BuildStatus.SUCCEEDED:
            return current
        assert time.monotonic() < deadline, current
        time.sleep(0.3)


def test_exec_in_flight_and_a_working_task_keep_it_then_idle_stops_it(
    dh: Harness, docker_client: docker.DockerClient, quick: None, ticking: None
) -> None:
    dh.admin.create_template(tar_gz({"dockyard.yaml": MANIFEST}))
    created = dh.admin.create_workspace(m.CreateWorkspaceRequest(template="idle", name="idle-e2e"))
    ws = dh.admin.get_workspace(created.id, wait="ready", timeout=120)
    assert ws.status == m.WorkspaceStatus.RUNNING
    assert ws.idle_timeout_ms == 4000

    # An exec that lasts three idle timeouts: in flight, it keeps the workspace.
    result = dh.admin.exec(ws.id, m.ExecRequest(command="sleep 12; echo done"))
    assert (result.exit_code, result.stdout) == (0, "done\n")
    assert dh.admin.get_workspace(ws.id).status == m.WorkspaceStatus.RUNNING

    # A task reporting `working` (through the tool inside the workspace) holds off the idle stop.
    dh.admin.exec(ws.id, m.ExecRequest(command="dockyard-agent report working 'running the tests'"))
    time.sleep(10)
    held = dh.admin.get_workspace(ws.id)
    assert held.status == m.WorkspaceStatus.RUNNING
    assert held.lifetime is not None
    assert (held.lifetime.active, held.lifetime.active_reason) == (True, "task working")
    assert _running(docker_client, ws.id)

    # Done: only the background `sleep 600` is left, which is no activity. Warned, then stopped.
    events: list[m.Workspace | m.LifetimeWarning] = []

    def watch() -> None:
        for event in dh.admin.watch_events(ws.id):
            events.append(event)
            if isinstance(event, m.Workspace) and event.status == m.WorkspaceStatus.STOPPED:
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    time.sleep(1)
    dh.admin.exec(ws.id, m.ExecRequest(command="dockyard-agent report done 'all green'"))
    stopped = _await_status(dh, ws.id, m.WorkspaceStatus.STOPPED, timeout=60)
    assert (stopped.latest_build.transition, stopped.latest_build.reason) == (
        m.Transition.STOP,
        m.BuildReason.IDLE,
    )
    assert not _running(docker_client, ws.id)
    watcher.join(30)
    warnings = [e for e in events if isinstance(e, m.LifetimeWarning)]
    assert [(w.workspace_name, w.stop_reason) for w in warnings] == [("idle-e2e", "idle")]
    assert events.index(warnings[0]) < next(
        i
        for i, e in enumerate(events)
        if isinstance(e, m.Workspace) and e.status == m.WorkspaceStatus.STOPPED
    )


def test_autostart_starts_a_stopped_container(
    dh: Harness, docker_client: docker.DockerClient, ticking: None
) -> None:
    dh.admin.create_template(tar_gz({"dockyard.yaml": MANIFEST.replace("lifetime: {idle_timeout: 4s}", "")}))
    ws = dh.await_build(
        dh.admin.create_workspace(m.CreateWorkspaceRequest(template="idle", name="auto-e2e")).id, timeout=120
    )
    dh.admin.stop_workspace(ws.id)
    _await_status(dh, ws.id, m.WorkspaceStatus.STOPPED, timeout=60)
    dh.admin.set_autostart(ws.id, "* * * * *", "Europe/Berlin")
    with dh.app.state.sessions() as db:
        db.get(Workspace, ws.id).autostart_next_at = datetime.now(UTC)
        db.commit()
    started = _await_status(dh, ws.id, m.WorkspaceStatus.RUNNING, timeout=120)
    assert started.latest_build.reason == m.BuildReason.AUTOSTART
    assert _running(docker_client, ws.id)
