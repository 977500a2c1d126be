"""Idle auto-stop: what counts as activity, the warning before the stop, and a pass that survives one bad row."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from dockyard.lifecycle import idle
from dockyard.provisioner import lifetimes
from dockyard.store.models import Workspace, WorkspaceBuild
from dockyard_sdk import models as m
from tests.harness import Harness

LIFETIME = {"ttl": "{{ parameters.ttl_hours }}h", "idle_timeout": "20s"}


def _last_used(h: Harness, workspace_id: str, seconds_ago: float, reason: str = "exec") -> None:
    """As if the workspace was last used that long ago (its start build ended before that)."""
    at = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    with h.app.state.sessions() as db:
        workspace = db.get(Workspace, workspace_id)
        workspace.last_used_at, workspace.last_activity_reason = at, reason
        for build in db.query(WorkspaceBuild).filter_by(workspace_id=workspace_id):
            build.completed_at = at - timedelta(seconds=1)
        db.commit()


def test_a_workspace_shows_why_it_is_active_and_when_it_stops(h: Harness) -> None:
    h.template(name="idle", lifetime=LIFETIME)
    ws = h.workspace(template="idle", name="idle-a")
    assert ws.idle_timeout_ms == 20_000
    life = ws.lifetime
    assert life is not None
    assert (life.active, life.last_activity_reason, life.stop_reason, life.warned) == (
        False,
        "started",
        "idle",
        False,
    )
    assert life.idle_stop_at == life.last_activity_at + timedelta(seconds=20)
    assert life.stops_at == life.idle_stop_at  # the 4 h TTL is later

    _last_used(h, ws.id, 2, reason="ssh")
    life = h.admin.get_workspace(ws.id).lifetime
    assert life is not None
    assert (life.active, life.active_reason, life.last_activity_reason) == (
        True,
        "ssh within the last 15 s",
        "ssh",
    )
    h.app.state.background.tick()
    assert h.admin.get_workspace(ws.id).status == m.WorkspaceStatus.RUNNING


def test_an_idle_workspace_is_warned_then_stopped(h: Harness) -> None:
    h.template(name="idle", lifetime=LIFETIME)
    ws = h.workspace(template="idle", name="idle-b")
    busy = h.workspace(template="idle", name="idle-busy")
    _last_used(h, busy.id, 1)
    # 20 s timeout: the warning comes in its last quarter (5 s).
    _last_used(h, ws.id, 17)
    events: list[m.Workspace | m.LifetimeWarning] = []
    watcher = h.admin.watch_events(ws.id)
    events.append(next(watcher))
    ticker = threading.Thread(target=h.app.state.background.tick)
    ticker.start()
    events.append(next(watcher))
    ticker.join()
    warning = events[1]
    assert isinstance(warning, m.LifetimeWarning)
    assert (warning.workspace_name, warning.stop_reason) == ("idle-b", "idle")
    assert warning.message.startswith("Workspace 'idle-b' stops at ")
    assert warning.message.endswith(
        ": nothing has used it; use it (SSH, a terminal, exec, files) to keep it running."
    )
    after = next(watcher)
    assert isinstance(after, m.Workspace)
    assert after.lifetime is not None
    assert after.lifetime.warned
    watcher.close()
    # Warned once: the next pass neither warns again nor stops yet.
    with h.app.state.sessions() as db:
        assert idle.enforce_idle(db) == {}

    _last_used(h, ws.id, 25)
    h.app.state.background.tick()
    stopped = h.await_build(ws.id)
    assert (stopped.status, stopped.latest_build.reason, stopped.latest_build.transition) == (
        m.WorkspaceStatus.STOPPED,
        m.BuildReason.IDLE,
        m.Transition.STOP,
    )
    assert stopped.lifetime is None
    assert h.admin.get_workspace(busy.id).status == m.WorkspaceStatus.RUNNING


def test_a_working_task_holds_off_the_idle_stop(h: Harness) -> None:
    h.template(name="idle", lifetime=LIFETIME)
    ws = h.workspace(template="idle", name="idle-c")
    h.admin.report_task(ws.id, m.TaskReport(state=m.TaskState.WORKING, summary="running the tests"))
    _last_used(h, ws.id, 600)
    with h.app.state.sessions() as db:
        db.get(Workspace, ws.id).task_updated_at = datetime.now(UTC) - timedelta(seconds=600)
        db.commit()
    h.app.state.background.tick()
    current = h.admin.get_workspace(ws.id)
    assert current.status == m.WorkspaceStatus.RUNNING
    assert current.lifetime is not None
    assert (current.lifetime.active, current.lifetime.active_reason, current.lifetime.idle_stop_at) == (
        True,
        "task working",
        None,
    )
    # Done: the task no longer holds it, and its last report is 10 minutes old.
    h.admin.report_task(ws.id, m.TaskReport(state=m.TaskState.DONE, summary="pushed"))
    with h.app.state.sessions() as db:
        db.get(Workspace, ws.id).task_updated_at = datetime.now(UTC) - timedelta(seconds=600)
        db.commit()
    h.app.state.background.tick()
    assert h.await_build(ws.id).latest_build.reason == m.BuildReason.IDLE


def test_an_idle_pass_survives_an_error_in_one_workspace(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    h.template(name="idle", lifetime=LIFETIME)
    bad, good = h.workspace(template="idle", name="idle-bad"), h.workspace(template="idle", name="idle-good")
    _last_used(h, bad.id, 60)
    _last_used(h, good.id, 60)
    real = lifetimes.plan

    def failing(workspace: Workspace, build: WorkspaceBuild, now: datetime) -> lifetimes.Plan | None:
        if workspace.id == bad.id:
            raise RuntimeError("one bad row")
        return real(workspace, build, now)

    monkeypatch.setattr(lifetimes, "plan", failing)
    with h.app.state.sessions() as db:
        assert idle.enforce_idle(db) == {"idle-good": "stopped"}
    monkeypatch.undo()
    assert h.await_build(good.id).status == m.WorkspaceStatus.STOPPED
    assert h.admin.get_workspace(bad.id).status == m.WorkspaceStatus.RUNNING
    with h.app.state.sessions() as db:
        assert idle.enforce_idle(db) == {"idle-bad": "stopped"}


def test_without_an_idle_timeout_nothing_stops(h: Harness) -> None:
    ws = h.workspace(name="no-idle")
    _last_used(h, ws.id, 86_000)
    h.app.state.background.tick()
    current = h.admin.get_workspace(ws.id)
    assert (current.status, current.idle_timeout_ms) == (m.WorkspaceStatus.RUNNING, None)
    assert current.lifetime is not None
    assert (current.lifetime.idle_stop_at, current.lifetime.stop_reason) == (None, "ttl")
