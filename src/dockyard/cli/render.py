"""How the workspace commands write things as text: log lines, parameter values, durations, and a workspace's
details.

Every time is shown in UTC, so that output reads the same wherever it is looked at.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import typer

from dockyard.cli import listing, output
from dockyard.cli.output import Column
from dockyard.cli.transitions import log_line_text, seconds_text
from dockyard_sdk import models as m
from dockyard_sdk.units import format_duration


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def log_text(line: m.BuildLogLine) -> str:
    return log_line_text(line.time, line.stage, line.output)


def value_text(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(value_text(v) for v in value)
    return str(value)


def timings_text(build: m.WorkspaceBuild) -> str:
    return ", ".join(f"{phase} {seconds_text(value)}" for phase, value in build.timings.items())


def _build_duration(build: m.WorkspaceBuild) -> str:
    if "total" in build.timings:
        return seconds_text(build.timings["total"])
    if build.started_at is not None and build.completed_at is not None:
        return seconds_text((build.completed_at - build.started_at).total_seconds())
    return "-"


def _initiated(build: m.WorkspaceBuild) -> str:
    if build.initiator:
        return build.initiator
    # Builds the lifecycle loops start (TTL, idle, autostart) have a reason and no user.
    return "-" if build.reason is m.BuildReason.INITIATOR else f"{build.reason.value} (automatic)"


def _template_text(workspace: m.Workspace) -> str:
    text = f"{workspace.template_name} {workspace.template_version_name}"
    return f"{text} (outdated)" if workspace.outdated else text


def _ttl_text(workspace: m.Workspace) -> str:
    return listing.ttl_text(workspace.ttl_ms, workspace.deadline)


def print_details(workspace: m.Workspace) -> None:
    """What `show` (and `create`, once done) prints: the workspace, its parameters and its latest build."""
    pairs = [
        ("NAME", workspace.name),
        ("ID", workspace.id),
        ("OWNER", workspace.owner_name),
        ("TEMPLATE", _template_text(workspace)),
        ("STATUS", workspace.status.value),
    ]
    if workspace.status_reason:
        pairs.append(("REASON", workspace.status_reason))
    if workspace.task is not None:
        task = workspace.task
        summary = f": {task.summary}" if task.summary else ""
        pairs.append(("TASK", f"{task.state.value}{summary} ({output.when(task.updated_at)})"))
        pairs += [(f"  {link.name}", link.url) for link in task.links]
    pairs += [
        ("TTL", _ttl_text(workspace)),
        ("DEADLINE", output.when(workspace.deadline, never="none")),
        ("CREATED", output.when(workspace.created_at)),
        ("LAST USED", output.when(workspace.last_used_at)),
    ]
    pairs += lifetime_pairs(workspace)
    output.print_rich(output.fields(pairs))
    typer.echo()
    usage = usage_pairs(workspace.agent.stats if workspace.agent is not None else None)
    if usage:
        output.print_rich(output.fields(usage))
        typer.echo()
    if workspace.parameters:
        rows = list(workspace.parameters.items())
        parameter_columns: list[Column[tuple[str, Any]]] = [
            Column("PARAMETER", lambda p: p[0]),
            Column("VALUE", lambda p: value_text(p[1])),
        ]
        output.print_rich(output.table(parameter_columns, rows))
    else:
        typer.echo("No parameters.")
    typer.echo()
    build = workspace.latest_build
    details = [
        ("LATEST BUILD", f"#{build.number} {build.transition.value} {build.status.value}"),
        ("VERSION", build.template_version_name),
        ("INITIATOR", _initiated(build)),
        ("CREATED", output.when(build.created_at)),
        ("TIMINGS", timings_text(build) or "-"),
    ]
    if build.error:
        details.append(("ERROR", build.error))
    output.print_rich(output.fields(details))


def lifetime_pairs(workspace: m.Workspace) -> list[tuple[str, str]]:
    """Why the workspace counts as active, when it stops by itself, and when it starts."""
    pairs = []
    if workspace.idle_timeout_ms:
        pairs.append(("IDLE TIMEOUT", format_duration(timedelta(milliseconds=workspace.idle_timeout_ms))))
    life = workspace.lifetime
    if life is not None:
        pairs.append(("ACTIVE", f"{'yes' if life.active else 'no'} ({life.active_reason})"))
        if life.stops_at is not None:
            warned = ", warned" if life.warned else ""
            pairs.append(("AUTO STOP", f"{output.when(life.stops_at)} ({life.stop_reason}{warned})"))
    if workspace.autostart is not None:
        plan = workspace.autostart
        pairs.append(
            ("AUTOSTART", f"{plan.schedule} ({plan.timezone}), next {output.when(plan.next_at, never='-')}")
        )
    return pairs


def size_text(size: int) -> str:
    """Bytes in binary units, as templates write them: 512 MiB, 1.5 GiB."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" or value >= 100 else f"{value:.3g} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _times(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def usage_pairs(stats: m.AgentStats | None) -> list[tuple[str, str]]:
    """What the workspace uses against its limits, as the agent last reported it (none before a report)."""
    if stats is None:
        return []
    pairs = []
    if stats.memory_bytes is not None:
        text = size_text(stats.memory_bytes)
        if stats.memory_limit_bytes:
            text += f" of {size_text(stats.memory_limit_bytes)}"
        if stats.oom_kills:
            text += f" (limit hit: {_times(stats.oom_kills, 'process', 'processes')} killed out of memory)"
        pairs.append(("MEMORY", text))
    if stats.pids_current is not None:
        text = f"{stats.pids_current}" + (f" of {stats.pids_limit}" if stats.pids_limit else "")
        if stats.pids_limit_hits:
            text += f" (limit hit: {_times(stats.pids_limit_hits, 'fork', 'forks')} refused)"
        pairs.append(("PROCESSES", text))
    if stats.disk_used_bytes is not None:
        text = size_text(stats.disk_used_bytes)
        if stats.disk_limit_bytes:
            text += f" of {size_text(stats.disk_limit_bytes)} (limit)"
        elif stats.disk_total_bytes:
            text += f" of {size_text(stats.disk_total_bytes)} (shared disk, no limit)"
        pairs.append(("HOME DISK", text))
    return pairs


def changes_text(
    workspace: m.Workspace, parameters: dict[str, Any] | None, *, version: str | None, ttl: str | None
) -> str:
    """What `update` changed, e.g. `branch=main, TTL 4h`, with the values as the server stored them."""
    changes = [
        f"{key}={value_text(workspace.parameters.get(key, value))}"
        for key, value in (parameters or {}).items()
    ]
    if version is not None:
        changes.append(f"template version {workspace.template_version_name}")
    if ttl is not None:
        changes.append("no TTL" if ttl == "0" else f"TTL {ttl}")
    return ", ".join(changes)


BUILD_COLUMNS: list[Column[m.WorkspaceBuild]] = [
    Column("BUILD", lambda b: f"#{b.number}"),
    Column("TRANSITION", lambda b: b.transition.value),
    Column("STATUS", lambda b: b.status.value),
    Column("REASON", lambda b: b.reason.value),
    Column("INITIATOR", lambda b: b.initiator or "-"),
    Column("VERSION", lambda b: b.template_version_name),
    Column("CREATED", lambda b: output.when(b.created_at)),
    Column("DURATION", lambda b: _build_duration(b)),
    Column("ERROR", lambda b: b.error),
]
