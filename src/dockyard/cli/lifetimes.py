"""`dockyard extend NAME 2h` and `dockyard schedule NAME --autostart CRON --tz ZONE | --off`."""

from __future__ import annotations

from typing import Annotated

import typer

from dockyard.cli import config, output
from dockyard.cli.errors import CliError
from dockyard.cli.output import OutputFormat, OutputOption
from dockyard.cli.workspaces import WorkspaceArg


def extend(
    workspace: WorkspaceArg,
    ttl: Annotated[
        str, typer.Argument(metavar="DURATION", help="The new TTL from now, e.g. 2h; 0 removes it.")
    ],
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """Move a running workspace's deadline to DURATION from now, without a restart (within the template's
    maximum)."""
    with config.session() as client:
        found = client.get_workspace(workspace)
        updated = client.set_ttl(found.id, ttl)
    if output_format is OutputFormat.JSON:
        output.print_json(updated)
    elif updated.deadline is None:
        output.message(f"{workspace} has no deadline now")
    else:
        output.message(f"{workspace} now stops at {output.when(updated.deadline)}")


def schedule(
    workspace: WorkspaceArg,
    autostart: Annotated[
        str | None, typer.Option("--autostart", metavar="CRON", help='Five cron fields, e.g. "0 9 * * 1-5".')
    ] = None,
    tz: Annotated[
        str, typer.Option("--tz", help="IANA time zone of the schedule, e.g. Europe/Berlin.")
    ] = "UTC",
    off: Annotated[bool, typer.Option("--off", help="Turn autostart off.")] = False,
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """Start a stopped workspace on a cron schedule in a time zone (`--off` turns it off)."""
    if off == (autostart is not None):
        raise CliError(
            "give --autostart CRON or --off", hint='e.g. --autostart "0 9 * * 1-5" --tz Europe/Berlin'
        )
    with config.session() as client:
        found = client.get_workspace(workspace)
        updated = client.set_autostart(found.id, None if off else autostart, tz)
    if output_format is OutputFormat.JSON:
        output.print_json(updated)
    elif updated.autostart is None:
        output.message(f"Autostart is off for {workspace}")
    else:
        plan = updated.autostart
        output.message(
            f"{workspace} starts on {plan.schedule!r} ({plan.timezone}); next at {output.when(plan.next_at)}"
        )
