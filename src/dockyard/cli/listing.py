"""`dockyard list`, from the API's own JSON, on the standard library alone.

Listing is what people (and their scripts) run most, and importing Typer, pydantic and httpx took longer than the
request. So `dockyard.cli.entry` runs a `list` whose arguments `parse_args` understands here, with the SDK's
standard-library client (`dockyard_sdk.plain`); the Typer command (`cli/workspaces.py`) parses everything else
(and explains a bad argument) and then prints through `show` as well, so both print the same.

The table is plain columns two spaces apart, like `docker ps`: a row longer than the terminal is left to wrap
rather than squeezed into it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from dockyard_sdk.plain import JsonSource
from dockyard_sdk.units import format_duration

PAGE = 500
# The values of `WorkspaceStatus` (a test holds them equal); any other --status goes to Typer, which says so.
STATUSES = frozenset(
    {
        "pending",
        "starting",
        "running",
        "stopping",
        "stopped",
        "deleting",
        "deleted",
        "failed",
        "canceling",
        "canceled",
    }
)
_FORMATS = ("table", "json")
_OPTIONS = {
    "--status": "status",
    "--template": "template",
    "-t": "template",
    "--output": "output",
    "-o": "output",
}


class ListArgs(NamedTuple):
    everyone: bool = False
    status: str | None = None
    template: str | None = None
    output: str = "table"


def parse_args(argv: Sequence[str]) -> ListArgs | None:
    """The options of `list [--all] [--status S] [--template T] [--output F]`; None for anything else (a typo,
    `--help`, a value Typer would refuse), which the Typer command then parses and explains."""
    if not argv or argv[0] != "list":
        return None
    values: dict[str, Any] = {}
    rest = list(argv[1:])
    while rest:
        token = rest.pop(0)
        if token in ("--all", "-a"):
            values["everyone"] = True
            continue
        name, equals, value = token.partition("=")
        option = _OPTIONS.get(name if equals and name.startswith("--") else token)
        if option is None:
            return None
        if not equals:
            if not rest or rest[0].startswith("-"):
                return None
            value = rest.pop(0)
        if option in ("status", "output"):
            value = value.lower()
            if value not in (STATUSES if option == "status" else _FORMATS):
                return None
        values[option] = value
    return ListArgs(**values)


def fetch(source: JsonSource, args: ListArgs) -> list[dict[str, Any]]:
    """Every matching workspace, a page at a time."""
    found: list[dict[str, Any]] = []
    while True:
        page = source.get_json(
            "/api/v2/workspaces",
            {
                "owner": None if args.everyone else "me",
                "template": args.template,
                "status": args.status,
                "limit": PAGE,
                "offset": len(found),
            },
        )
        found += page["workspaces"]
        if not page["workspaces"] or len(found) >= page["count"]:
            return found


def show(source: JsonSource, args: ListArgs) -> None:
    """Fetch and print: the API's JSON, or a table (its empty-list message goes to stderr)."""
    found = fetch(source, args)
    if args.output == "json":
        sys.stdout.write(json.dumps({"workspaces": found, "count": len(found)}, indent=2) + "\n")
    elif not found:
        filtered = args.status is not None or args.template is not None
        sys.stderr.write(
            "No workspaces match.\n"
            if filtered
            else "No workspaces yet; create one with `dockyard create --template TEMPLATE`.\n"
        )
    else:
        sys.stdout.write(table(columns(everyone=args.everyone), found, bold=bold_header()))
    sys.stdout.flush()


# --- the table ----------------------------------------------------------------------------------------------


Column = tuple[str, Callable[[dict[str, Any]], str]]


def columns(*, everyone: bool) -> list[Column]:
    """The table's columns; OWNER only when it lists everyone's workspaces."""
    result: list[Column] = [("NAME", lambda w: str(w["name"]))]
    if everyone:
        result.append(("OWNER", lambda w: str(w["owner_name"])))
    result += [
        ("TEMPLATE", template_text),
        ("STATUS", lambda w: str(w["status"])),
        ("TASK", lambda w: str(w["task"]["state"]) if w.get("task") else "-"),
        ("LAST BUILD", _last_build),
        ("TTL", lambda w: ttl_text(w.get("ttl_ms"), _time(w.get("deadline")))),
    ]
    return result


def table(cols: Sequence[Column], rows: Sequence[dict[str, Any]], *, bold: bool = False) -> str:
    """Left-aligned columns two spaces apart under a header row; no trailing spaces."""
    cells = [[value(row) for _, value in cols] for row in rows]
    widths = [max([len(header), *(len(line[i]) for line in cells)]) for i, (header, _) in enumerate(cols)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    header = line([header for header, _ in cols])
    if bold:
        header = f"\x1b[1m{header}\x1b[0m"
    return "\n".join([header, *(line(values) for values in cells)]) + "\n"


def bold_header() -> bool:
    # As Rich decides: a terminal that is not `dumb`, and no NO_COLOR.
    import os

    if os.environ.get("NO_COLOR"):
        return False
    return sys.stdout.isatty() and os.environ.get("TERM", "") not in ("dumb", "unknown")


def template_text(workspace: dict[str, Any]) -> str:
    text = f"{workspace['template_name']} {workspace['template_version_name']}"
    return f"{text} (outdated)" if workspace.get("outdated") else text


def _last_build(workspace: dict[str, Any]) -> str:
    build = workspace["latest_build"]
    created = _time(build.get("created_at"))
    return f"{build['transition']}, {ago(created) if created else '-'}"


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def span(delta: timedelta) -> str:
    """A coarse span, such as 5m, 3h20m or 2d4h: lists are read at a glance."""
    minutes = int(delta.total_seconds()) // 60
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    return f"{minutes}m"


def ago(moment: datetime) -> str:
    delta = datetime.now(UTC) - _utc(moment)
    return "just now" if delta < timedelta(minutes=1) else f"{span(delta)} ago"


def ttl_text(ttl_ms: int | None, deadline: datetime | None) -> str:
    if ttl_ms is None:
        return "-"
    text = format_duration(timedelta(milliseconds=ttl_ms))
    if deadline is None:
        return text
    left = _utc(deadline) - datetime.now(UTC)
    return f"{text} ({span(left)} left)" if left > timedelta(0) else f"{text} (due)"


# --- the fast path ------------------------------------------------------------------------------------------


def main(args: ListArgs) -> int:
    """`dockyard list` before Typer is imported: exit code 0, or 1 after an `error: …` on stderr."""
    from dockyard.cli import fastpath

    return fastpath.run(lambda client: show(client, args))
