"""A workspace's details as `dockyard show` and `dockyard create` print them, from the API's own JSON, on the
standard library alone.

`create` prints them once its workspace is ready, and the standard-library path (`cli/creation.py`) must print
what the Typer command prints; so both, and `show`, build the text here from the workspace's JSON.

Blocks of "LABEL  value" lines and a parameter table, columns two spaces apart; a value wider than the output
wraps at word boundaries under its own column (the width is COLUMNS, the terminal's, or 1000 for a pipe, so that a
script reads every value on one line).
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from dockyard.cli.listing import bold_header, template_text, ttl_text
from dockyard.cli.transitions import seconds_text
from dockyard_sdk.units import format_duration

_PIPE_WIDTH = 1000
_GAP = "  "


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def when(value: str | None, *, never: str = "never") -> str:
    """A timestamp to the minute, in UTC (`output.when` of the API's JSON)."""
    moment = _time(value)
    if moment is None:
        return never
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%MZ")


def value_text(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(value_text(v) for v in value)
    return str(value)


def timings_text(timings: dict[str, float]) -> str:
    return ", ".join(f"{phase} {seconds_text(value)}" for phase, value in timings.items())


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


def _initiated(build: dict[str, Any]) -> str:
    if build.get("initiator"):
        return str(build["initiator"])
    # Builds the lifecycle loops start (TTL, idle, autostart) have a reason and no user.
    reason = build.get("reason") or "initiator"
    return "-" if reason == "initiator" else f"{reason} (automatic)"


def lifetime_pairs(workspace: dict[str, Any]) -> list[tuple[str, str]]:
    """Why the workspace counts as active, when it stops by itself, and when it starts."""
    pairs = []
    if workspace.get("idle_timeout_ms"):
        pairs.append(("IDLE TIMEOUT", format_duration(timedelta(milliseconds=workspace["idle_timeout_ms"]))))
    life = workspace.get("lifetime")
    if life is not None:
        pairs.append(("ACTIVE", f"{'yes' if life['active'] else 'no'} ({life['active_reason']})"))
        if life.get("stops_at") is not None:
            warned = ", warned" if life.get("warned") else ""
            pairs.append(("AUTO STOP", f"{when(life['stops_at'])} ({life['stop_reason']}{warned})"))
    plan = workspace.get("autostart")
    if plan is not None:
        pairs.append(
            (
                "AUTOSTART",
                f"{plan['schedule']} ({plan['timezone']}), next {when(plan.get('next_at'), never='-')}",
            )
        )
    return pairs


def usage_pairs(stats: dict[str, Any] | None) -> list[tuple[str, str]]:
    """What the workspace uses against its limits, as the agent last reported it (none before a report)."""
    if stats is None:
        return []
    pairs = []
    if stats.get("memory_bytes") is not None:
        text = size_text(stats["memory_bytes"])
        if stats.get("memory_limit_bytes"):
            text += f" of {size_text(stats['memory_limit_bytes'])}"
        if stats.get("oom_kills"):
            text += f" (limit hit: {_times(stats['oom_kills'], 'process', 'processes')} killed out of memory)"
        pairs.append(("MEMORY", text))
    if stats.get("pids_current") is not None:
        text = f"{stats['pids_current']}" + (f" of {stats['pids_limit']}" if stats.get("pids_limit") else "")
        if stats.get("pids_limit_hits"):
            text += f" (limit hit: {_times(stats['pids_limit_hits'], 'fork', 'forks')} refused)"
        pairs.append(("PROCESSES", text))
    if stats.get("disk_used_bytes") is not None:
        text = size_text(stats["disk_used_bytes"])
        if stats.get("disk_limit_bytes"):
            text += f" of {size_text(stats['disk_limit_bytes'])} (limit)"
        elif stats.get("disk_total_bytes"):
            text += f" of {size_text(stats['disk_total_bytes'])} (shared disk, no limit)"
        pairs.append(("HOME DISK", text))
    return pairs


# --- layout -------------------------------------------------------------------------------------------------


def width() -> int:
    """The output's width, as Rich found it for the tables this text replaced."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    if sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return _PIPE_WIDTH


def columns_text(
    rows: Sequence[tuple[str, str]], *, header: tuple[str, str] | None = None, width: int, bold: bool
) -> list[str]:
    """Two columns two spaces apart; the second wraps within `width`, under itself. Bold: the header row if
    there is one, else the first column."""
    first = max(len(label) for label, _ in [*rows, *([header] if header else [])])
    room = max(10, width - first - len(_GAP))
    lines: list[str] = []

    def emit(label: str, value: str, *, strong: bool) -> None:
        parts = [
            piece
            for paragraph in value.split("\n")
            for piece in (textwrap.wrap(paragraph, room, break_on_hyphens=False) or [""])
        ]
        shown = f"\x1b[1m{label}\x1b[0m" if strong and label else label
        lines.append(f"{shown}{' ' * (first - len(label))}{_GAP}{parts[0]}".rstrip())
        lines.extend(f"{' ' * (first + len(_GAP))}{part}".rstrip() for part in parts[1:])

    if header is not None:
        if bold:
            lines.append(f"\x1b[1m{header[0].ljust(first)}{_GAP}{header[1]}\x1b[0m")
        else:
            lines.append(f"{header[0].ljust(first)}{_GAP}{header[1]}".rstrip())
    for label, value in rows:
        emit(label, value, strong=bold and header is None)
    return lines


def text(workspace: dict[str, Any], *, width: int, bold: bool) -> str:
    """What `show` (and `create`, once done) prints: the workspace, its parameters and its latest build."""
    pairs = [
        ("NAME", workspace["name"]),
        ("ID", workspace["id"]),
        ("OWNER", workspace["owner_name"]),
        ("TEMPLATE", template_text(workspace)),
        ("STATUS", workspace["status"]),
    ]
    if workspace.get("status_reason"):
        pairs.append(("REASON", workspace["status_reason"]))
    task = workspace.get("task")
    if task is not None:
        summary = f": {task['summary']}" if task.get("summary") else ""
        pairs.append(("TASK", f"{task['state']}{summary} ({when(task['updated_at'])})"))
        pairs += [(f"  {link['name']}", link["url"]) for link in task.get("links") or ()]
    pairs += [
        ("TTL", ttl_text(workspace.get("ttl_ms"), _time(workspace.get("deadline")))),
        ("DEADLINE", when(workspace.get("deadline"), never="none")),
        ("CREATED", when(workspace.get("created_at"))),
        ("LAST USED", when(workspace.get("last_used_at"))),
    ]
    pairs += lifetime_pairs(workspace)
    lines = [*columns_text(pairs, width=width, bold=bold), ""]
    agent = workspace.get("agent")
    usage = usage_pairs(agent.get("stats") if agent is not None else None)
    if usage:
        lines += [*columns_text(usage, width=width, bold=bold), ""]
    parameters = workspace.get("parameters") or {}
    if parameters:
        rows = [(str(key), value_text(value)) for key, value in parameters.items()]
        lines += columns_text(rows, header=("PARAMETER", "VALUE"), width=width, bold=bold)
    else:
        lines.append("No parameters.")
    lines.append("")
    build = workspace["latest_build"]
    details = [
        ("LATEST BUILD", f"#{build['number']} {build['transition']} {build['status']}"),
        ("VERSION", build["template_version_name"]),
        ("INITIATOR", _initiated(build)),
        ("CREATED", when(build.get("created_at"))),
        ("TIMINGS", timings_text(build.get("timings") or {}) or "-"),
    ]
    if build.get("error"):
        details.append(("ERROR", build["error"]))
    lines += columns_text(details, width=width, bold=bold)
    return "\n".join(lines) + "\n"


def show(workspace: dict[str, Any]) -> None:
    sys.stdout.write(text(workspace, width=width(), bold=bold_header()))
    sys.stdout.flush()
