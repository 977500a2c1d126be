"""When a running workspace stops by itself, and why it counts as active until then.

Read by the API (`workspace.lifetime`) and by the lifecycle loops (lifecycle/idle.py), so what the user is
shown is exactly what the loop acts on.

Activity is what passes through the control plane: SSH sessions, terminals, exec calls, port forwards,
file operations (`tunnel/state.touch`, throttled to one write every few seconds per workspace), and a task
reporting `working`. A process left running in the background alone is not activity.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from dockyard.errors import Validation
from dockyard.store.models import Workspace, WorkspaceBuild
from dockyard_sdk import models as wire
from dockyard_sdk.manifest import TemplateManifest
from dockyard_sdk.models import BuildStatus, Transition
from dockyard_sdk.units import format_duration, parse_duration

# An open session re-marks its workspace every heartbeat; a workspace is only idle once a few heartbeats were
# missed, so a shorter idle timeout acts as this one (a loaded machine delays the heartbeat threads).
# Activity is written at most this often per workspace (never per byte); sessions that stay open re-mark it
# every ACTIVITY_HEARTBEAT, a little more often, so a heartbeat is never swallowed by the throttle.
ACTIVITY_EVERY = timedelta(seconds=4)
ACTIVITY_HEARTBEAT = 5.0
MIN_IDLE = timedelta(seconds=3 * ACTIVITY_HEARTBEAT)
# Warn this long before an automatic stop, or a quarter of the timeout when that is shorter.
WARN_BEFORE = timedelta(minutes=5)
# How long past its deadline a task reporting `working` holds the TTL of a template without `max_ttl`: a coding
# agent that died after its `working` report (its Dockyard agent still connected) would otherwise keep the
# workspace for ever, which a fleet's TTL is there to prevent.
TASK_HOLD_MAX = timedelta(days=1)


@dataclass(frozen=True)
class Plan:
    active: bool
    active_reason: str
    last_activity_at: datetime | None
    last_activity_reason: str | None
    idle_stop_at: datetime | None
    stops_at: datetime | None
    stop_reason: str | None
    warn_from: datetime | None

    def warned(self, workspace: Workspace) -> bool:
        return self.stops_at is not None and workspace.stop_warned_for == self.stops_at


def runs(build: WorkspaceBuild) -> bool:
    return build.transition == Transition.START.value and build.status == BuildStatus.SUCCEEDED.value


def idle_after(workspace: Workspace) -> timedelta | None:
    if not workspace.idle_timeout_seconds:
        return None
    return max(timedelta(seconds=workspace.idle_timeout_seconds), MIN_IDLE)


def plan(workspace: Workspace, build: WorkspaceBuild, now: datetime) -> Plan | None:
    """None unless the workspace runs (the latest build is a successful start)."""
    if workspace.deleted or not runs(build):
        return None
    last_at, last_reason = workspace.last_used_at, workspace.last_activity_reason
    started = build.completed_at or build.created_at
    if last_at is None or last_at < started:
        last_at, last_reason = started, "started"
    if workspace.task_updated_at is not None and workspace.task_updated_at > last_at:
        last_at, last_reason = workspace.task_updated_at, "task"
    working = workspace.task_state == wire.TaskState.WORKING.value
    recent = now - last_at < MIN_IDLE
    held = working and workspace.deadline is not None and workspace.deadline <= now
    if held:
        active, why = True, "task working (holds the TTL until it reports another state)"
    elif working:
        active, why = True, "task working"
    elif recent and last_reason != "started":
        active, why = (
            True,
            f"{last_reason.replace('_', ' ') if last_reason else 'use'} within the last {_secs(MIN_IDLE)}",
        )
    else:
        active, why = False, f"no activity since {last_at.isoformat(timespec='seconds')}"
    timeout = idle_after(workspace)
    # A working task holds the idle stop off entirely; the TTL still applies.
    idle_stop = last_at + timeout if timeout is not None and not working else None
    # A TTL reached while the task works waits for it (ttl_held); the stop then comes after its next report.
    deadline = None if held else workspace.deadline
    candidates = [(at, reason) for at, reason in ((deadline, "ttl"), (idle_stop, "idle")) if at]
    stops_at, stop_reason = min(candidates) if candidates else (None, None)
    warn_from = None
    if stops_at is not None:
        span = timeout if stop_reason == "idle" else timedelta(seconds=workspace.ttl_seconds or 0)
        warn_from = stops_at - min(WARN_BEFORE, (span or WARN_BEFORE) / 4)
    return Plan(
        active=active,
        active_reason=why,
        last_activity_at=last_at,
        last_activity_reason=last_reason,
        idle_stop_at=idle_stop,
        stops_at=stops_at,
        stop_reason=stop_reason,
        warn_from=warn_from,
    )


def ttl_held(workspace: Workspace, now: datetime, *, max_ttl: int | None, agent_connected: bool) -> bool:
    """Whether a reached TTL waits: the workspace's task reports `working` and its agent is connected (a
    workspace whose agent is gone cannot be mid-task). The wait ends with the task's next other report, or
    `max_ttl` (the template's, seconds) after the deadline was last set: the same bound an extension has, so
    the wait keeps no workspace longer than `dockyard extend` could. Without `max_ttl`, TASK_HOLD_MAX after
    the deadline."""
    if workspace.task_state != wire.TaskState.WORKING.value or not agent_connected:
        return False
    if workspace.deadline is None:
        return True
    if max_ttl is not None and workspace.ttl_seconds:
        set_at = workspace.deadline - timedelta(seconds=workspace.ttl_seconds)
        return now < set_at + timedelta(seconds=max_ttl)
    return now < workspace.deadline + TASK_HOLD_MAX


def max_ttl_seconds(manifest: TemplateManifest) -> int | None:
    limit = manifest.lifetime.max_ttl
    return int(parse_duration(limit).total_seconds()) if limit else None


def check_max_ttl(manifest: TemplateManifest, seconds: int | None, *, field: str) -> list[Validation]:
    limit = max_ttl_seconds(manifest)
    if limit is None:
        return []
    if seconds is None:
        return [
            Validation(
                field, f"a workspace of this template needs a TTL (at most {manifest.lifetime.max_ttl})"
            )
        ]
    if seconds > limit:
        return [
            Validation(
                field, f"{_duration(seconds)} is above the template's maximum {manifest.lifetime.max_ttl}"
            )
        ]
    return []


def _duration(seconds: int) -> str:
    return format_duration(timedelta(seconds=seconds))


def _secs(delta: timedelta) -> str:
    return f"{int(delta.total_seconds())} s"


def to_wire(workspace: Workspace, build: WorkspaceBuild, now: datetime) -> wire.WorkspaceLifetime | None:
    found = plan(workspace, build, now)
    if found is None:
        return None
    return wire.WorkspaceLifetime(
        active=found.active,
        active_reason=found.active_reason,
        last_activity_at=found.last_activity_at,
        last_activity_reason=found.last_activity_reason,
        idle_stop_at=found.idle_stop_at,
        stops_at=found.stops_at,
        stop_reason=found.stop_reason,
        warned=found.warned(workspace),
    )
