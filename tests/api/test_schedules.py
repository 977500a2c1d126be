"""Autostart schedules (cron in a time zone) and extending a running workspace within the template's maximum."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from dockyard.store.models import Workspace
from dockyard_sdk import ApiError
from dockyard_sdk import models as m
from tests.harness import Harness


def _refusal(call: object) -> ApiError:
    with pytest.raises(ApiError) as info:
        call()  # type: ignore[operator]
    return info.value


def test_autostart_is_stored_with_its_zone_and_next_time(h: Harness) -> None:
    ws = h.workspace(name="sched")
    updated = h.admin.set_autostart(ws.id, "0 9 * * 1-5", "Europe/Berlin")
    plan = updated.autostart
    assert plan is not None
    assert (plan.schedule, plan.timezone) == ("0 9 * * 1-5", "Europe/Berlin")
    assert plan.next_at is not None
    local = plan.next_at.astimezone(ZoneInfo("Europe/Berlin"))
    assert (local.hour, local.minute, local.weekday() < 5) == (9, 0, True)
    assert plan.next_at > datetime.now(UTC)
    audit = h.admin.audit(action="workspace.schedule").audit_logs
    assert [(a.resource_name, a.detail) for a in audit] == [
        ("sched", {"autostart": "0 9 * * 1-5", "timezone": "Europe/Berlin"})
    ]
    off = h.admin.set_autostart(ws.id, None)
    assert off.autostart is None


@pytest.mark.parametrize(
    ("schedule", "zone", "field", "detail"),
    [
        (
            "61 * * * *",
            "UTC",
            "autostart",
            "'61 * * * *' is not five cron fields (minute hour day month weekday)",
        ),
        (
            "0 9 * * 1-5 *",
            "UTC",
            "autostart",
            "'0 9 * * 1-5 *' is not five cron fields (minute hour day month weekday)",
        ),
        (
            "0 9 * * 1-5",
            "Mars/Olympus",
            "timezone",
            "'Mars/Olympus' is not an IANA time zone, e.g. Europe/Berlin",
        ),
    ],
)
def test_a_bad_schedule_is_422_naming_the_field_and_changes_nothing(
    h: Harness, schedule: str, zone: str, field: str, detail: str
) -> None:
    ws = h.workspace(name="sched")
    h.admin.set_autostart(ws.id, "30 7 * * *", "UTC")
    error = _refusal(lambda: h.admin.set_autostart(ws.id, schedule, zone))
    assert (error.status_code, error.message) == (422, "Invalid autostart schedule.")
    assert [(v.field, v.detail) for v in error.validations] == [(field, detail)]
    plan = h.admin.get_workspace(ws.id).autostart
    assert plan is not None
    assert (plan.schedule, plan.timezone) == ("30 7 * * *", "UTC")


def test_a_due_schedule_starts_a_stopped_workspace(h: Harness) -> None:
    ws = h.workspace(name="sched")
    running = h.workspace(name="sched-running")
    h.admin.stop_workspace(ws.id)
    h.await_build(ws.id)
    for target in (ws.id, running.id):
        h.admin.set_autostart(target, "*/5 * * * *", "Asia/Kolkata")
    with h.app.state.sessions() as db:
        for target in (ws.id, running.id):
            db.get(Workspace, target).autostart_next_at = datetime.now(UTC) - timedelta(seconds=1)
        db.commit()
    h.app.state.background.tick()
    started = h.await_build(ws.id)
    assert (started.status, started.latest_build.reason, started.latest_build.number) == (
        m.WorkspaceStatus.RUNNING,
        m.BuildReason.AUTOSTART,
        3,
    )
    assert started.autostart is not None
    assert started.autostart.next_at is not None
    assert started.autostart.next_at > datetime.now(UTC)
    # A running workspace is left alone, and waits for its next time.
    other = h.admin.get_workspace(running.id)
    assert other.latest_build.number == 1
    assert other.autostart is not None
    assert other.autostart.next_at is not None
    assert other.autostart.next_at > datetime.now(UTC)


def test_autostart_needs_the_operate_scope_and_hides_others_workspaces(h: Harness) -> None:
    ws = h.workspace(name="sched")
    reader = h.user("rita", scopes=[m.Scope.WORKSPACE_READ])
    bob = h.user("bob")
    assert _refusal(lambda: reader.set_autostart(ws.id, "0 9 * * *")).status_code in (403, 404)
    assert _refusal(lambda: bob.set_autostart(ws.id, "0 9 * * *")).status_code == 404
    assert h.admin.get_workspace(ws.id).autostart is None


def test_extend_respects_the_templates_maximum(h: Harness) -> None:
    h.template(name="capped", lifetime={"ttl": "1h", "max_ttl": "3h"})
    ws = h.workspace(template="capped", name="capped")
    before = h.admin.get_workspace(ws.id).deadline
    error = _refusal(lambda: h.admin.set_ttl(ws.id, "4h"))
    assert (error.status_code, error.message) == (422, "The TTL is longer than the template allows.")
    assert [(v.field, v.detail) for v in error.validations] == [
        ("ttl", "4h is above the template's maximum 3h")
    ]
    assert h.admin.get_workspace(ws.id).deadline == before
    extended = h.admin.set_ttl(ws.id, "2h")
    assert extended.deadline is not None
    assert abs((extended.deadline - datetime.now(UTC)) - timedelta(hours=2)) < timedelta(seconds=30)
    assert extended.latest_build.number == 1  # no restart
    removed = _refusal(lambda: h.admin.set_ttl(ws.id, "0"))
    assert [(v.field, v.detail) for v in removed.validations] == [
        ("ttl", "a workspace of this template needs a TTL (at most 3h)")
    ]


def test_create_with_a_ttl_above_the_maximum_is_refused(h: Harness) -> None:
    h.template(name="capped", lifetime={"ttl": "1h", "max_ttl": "3h"})
    error = _refusal(
        lambda: h.admin.create_workspace(m.CreateWorkspaceRequest(template="capped", name="x", ttl="5h"))
    )
    assert error.status_code == 422
    assert [(v.field, v.detail) for v in error.validations] == [
        ("ttl", "5h is above the template's maximum 3h")
    ]
    assert h.admin.list_workspaces().count == 0
