"""Autostart schedules: five cron fields in an IANA time zone, stored on the workspace.

The leader's autostart loop (lifecycle/autostart.py) starts a stopped workspace once `autostart_next_at` has
passed, then moves it to the next match. Times are matched in the workspace's zone, so `0 9 * * 1-5` in
`Europe/Berlin` stays 9:00 local time across daylight-saving changes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from sqlalchemy.orm import Session

from dockyard.accounts.actor import Actor
from dockyard.errors import Validation, ValidationFailed
from dockyard.store import audit
from dockyard.store.models import Workspace
from dockyard.store.types import utcnow
from dockyard_sdk import models as wire


def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def check(schedule: str, timezone: str) -> list[Validation]:
    problems = []
    if len(schedule.split()) != 5 or not croniter.is_valid(schedule):
        problems.append(
            Validation("autostart", f"{schedule!r} is not five cron fields (minute hour day month weekday)")
        )
    if _zone(timezone) is None:
        problems.append(Validation("timezone", f"{timezone!r} is not an IANA time zone, e.g. Europe/Berlin"))
    return problems


def next_after(schedule: str, timezone: str, moment: datetime) -> datetime:
    zone = _zone(timezone) or UTC
    following: datetime = croniter(schedule, moment.astimezone(zone)).get_next(datetime)
    return following.astimezone(UTC)


def set_schedule(db: Session, actor: Actor, workspace: Workspace, request: wire.ScheduleRequest) -> None:
    if request.autostart is None:
        workspace.autostart_schedule = workspace.autostart_timezone = workspace.autostart_next_at = None
    else:
        problems = check(request.autostart, request.timezone)
        if problems:
            raise ValidationFailed("Invalid autostart schedule.", problems)
        workspace.autostart_schedule = request.autostart
        workspace.autostart_timezone = request.timezone
        workspace.autostart_next_at = next_after(request.autostart, request.timezone, utcnow())
    audit.record(
        db,
        actor,
        "workspace.schedule",
        resource_type="workspace",
        resource_id=workspace.id,
        resource_name=workspace.name,
        detail={"autostart": request.autostart, "timezone": request.timezone},
    )
    db.commit()


def to_wire(workspace: Workspace) -> wire.AutostartSchedule | None:
    if not workspace.autostart_schedule:
        return None
    return wire.AutostartSchedule(
        schedule=workspace.autostart_schedule,
        timezone=workspace.autostart_timezone or "UTC",
        next_at=workspace.autostart_next_at,
    )
