"""How the workspace commands write things as text: log lines, parameter values, durations, and a workspace's
details.

Every time is shown in UTC, so that output reads the same wherever it is looked at.
"""

from __future__ import annotations

from typing import Any

from dockyard.cli import details, output
from dockyard.cli.details import size_text, value_text
from dockyard.cli.output import Column
from dockyard.cli.transitions import log_line_text, seconds_text
from dockyard_sdk import models as m

__all__ = ["size_text", "value_text"]  # `quotas` and `update` print through them too


def log_text(line: m.BuildLogLine) -> str:
    return log_line_text(line.time, line.stage, line.output)


def timings_text(build: m.WorkspaceBuild) -> str:
    return details.timings_text(build.timings)


def _build_duration(build: m.WorkspaceBuild) -> str:
    if "total" in build.timings:
        return seconds_text(build.timings["total"])
    if build.started_at is not None and build.completed_at is not None:
        return seconds_text((build.completed_at - build.started_at).total_seconds())
    return "-"


def print_details(workspace: m.Workspace) -> None:
    """What `show` (and `create`, once done) prints: the standard-library path's text of the same JSON."""
    details.show(workspace.model_dump(mode="json"))


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
