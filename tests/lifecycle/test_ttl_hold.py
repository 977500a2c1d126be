"""A TTL never stops an agent mid-task: a reached deadline waits while the task reports `working` and its agent
is connected, up to the template's `max_ttl` (a day past the deadline without one); then the TTL acts as
usual."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dockyard.store.models import Workspace, WorkspaceAgent
from dockyard_sdk import models as m
from tests.fakes import FakeRuntime
from tests.harness import Harness


def _past_deadline(h: Harness, workspace_id: str, *, set_minutes_ago: float, connected: bool = True) -> None:
    """As if the one-hour TTL was set that long ago (so it ran out), with the agent connected or gone."""
    now = datetime.now(UTC)
    with h.app.state.sessions() as db:
        row = db.get(Workspace, workspace_id)
        row.deadline = now - timedelta(minutes=set_minutes_ago) + timedelta(seconds=row.ttl_seconds)
        agent = db.get(WorkspaceAgent, workspace_id)
        agent.connection = (
            m.AgentConnection.CONNECTED if connected else m.AgentConnection.DISCONNECTED
        ).value
        db.commit()


def test_a_working_task_holds_the_ttl_until_it_reports_done(h: Harness) -> None:
    h.template(name="sandbox", lifetime={"ttl": "1h", "on_ttl": "delete", "max_ttl": "3h"})
    working, gone, late, idle = (
        h.workspace(template="sandbox", name=name) for name in ("working", "gone", "late", "idle")
    )
    for ws in (working, gone, late):
        h.admin.report_task(ws.id, m.TaskReport(state=m.TaskState.WORKING, summary="running the tests"))
    _past_deadline(h, working.id, set_minutes_ago=61)
    _past_deadline(h, gone.id, set_minutes_ago=61, connected=False)  # no agent: it cannot be mid-task
    _past_deadline(h, late.id, set_minutes_ago=181)  # past max_ttl: an extension could not keep it either
    _past_deadline(h, idle.id, set_minutes_ago=61)
    h.app.state.background.tick()

    held = h.admin.get_workspace(working.id)
    assert (held.status, held.latest_build.reason) == (m.WorkspaceStatus.RUNNING, m.BuildReason.INITIATOR)
    assert held.lifetime is not None
    assert (held.lifetime.active, held.lifetime.active_reason, held.lifetime.stops_at) == (
        True,
        "task working (holds the TTL until it reports another state)",
        None,
    )
    for ws in (gone, late, idle):
        ended = h.await_build(ws.id)
        assert (ended.status, ended.latest_build.reason) == (m.WorkspaceStatus.DELETED, m.BuildReason.TTL)

    h.admin.report_task(working.id, m.TaskReport(state=m.TaskState.DONE, summary="pushed"))
    h.app.state.background.tick()
    ended = h.await_build(working.id)
    assert (ended.status, ended.latest_build.reason) == (m.WorkspaceStatus.DELETED, m.BuildReason.TTL)


def test_without_max_ttl_a_working_task_holds_the_ttl_for_a_day_at_most(h: Harness) -> None:
    """A coding agent that died after reporting `working` (its Dockyard agent still connected) does not keep its
    workspace for ever."""
    h.template(name="open", lifetime={"ttl": "1h", "on_ttl": "delete"})
    working, stuck = (h.workspace(template="open", name=name) for name in ("working", "stuck"))
    for ws in (working, stuck):
        h.admin.report_task(ws.id, m.TaskReport(state=m.TaskState.WORKING, summary="running the tests"))
    _past_deadline(h, working.id, set_minutes_ago=60 + 23 * 60)  # 23 hours past the deadline
    _past_deadline(h, stuck.id, set_minutes_ago=60 + 24 * 60 + 1)
    h.app.state.background.tick()

    held = h.admin.get_workspace(working.id)
    assert (held.status, held.latest_build.reason) == (m.WorkspaceStatus.RUNNING, m.BuildReason.INITIATOR)
    ended = h.await_build(stuck.id)
    assert (ended.status, ended.latest_build.reason) == (m.WorkspaceStatus.DELETED, m.BuildReason.TTL)


def test_the_ttl_counts_from_when_the_workspace_runs(h: Harness) -> None:
    """A workspace queued or building longer than its TTL is not deleted the moment it runs: a fleet of agents on
    a busy host would lose every workspace that waited for a worker."""
    h.template(name="sandbox", lifetime={"ttl": "1h", "on_ttl": "delete"})
    fake = h.runtime
    assert isinstance(fake, FakeRuntime)
    fake.gate.clear()  # the build waits in its first runtime call
    ws = h.admin.create_workspace(m.CreateWorkspaceRequest(template="sandbox", name="slow"))
    # As if it had waited an hour and a minute: the deadline the create set has passed.
    with h.app.state.sessions() as db:
        row = db.get(Workspace, ws.id)
        row.deadline = datetime.now(UTC) - timedelta(minutes=1)
        db.commit()
    fake.gate.set()
    ran = h.await_build(ws.id)
    assert ran.status == m.WorkspaceStatus.RUNNING
    assert ran.deadline is not None
    assert ran.deadline > datetime.now(UTC) + timedelta(minutes=59)
    h.app.state.background.tick()
    assert h.admin.get_workspace(ws.id).status == m.WorkspaceStatus.RUNNING
