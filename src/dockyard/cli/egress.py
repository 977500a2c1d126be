"""`dockyard egress NAME`: the egress log of an allowlist workspace."""

from __future__ import annotations

from typing import Annotated

import typer

from dockyard.cli import config, output
from dockyard.cli.output import Column, OutputFormat, OutputOption
from dockyard.cli.workspaces import WorkspaceArg
from dockyard_sdk import models as m

EGRESS_COLUMNS: list[Column[m.EgressEvent]] = [
    Column("TIME", lambda e: output.when(e.time)),
    Column("PROTOCOL", lambda e: e.protocol),
    Column("HOST", lambda e: e.host),
    Column("PORT", lambda e: str(e.port) if e.port else "-"),
    Column("DECISION", lambda e: e.decision),
    Column("REASON", lambda e: e.reason),
]


def egress(
    workspace: WorkspaceArg,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000, help="Entries per page.")] = 50,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Entries to skip (newest first).")] = 0,
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """Show a workspace's egress log: connections its allow-list let through or refused, newest first."""
    with config.session() as client:
        found = client.get_workspace(workspace)
        page = client.egress_events(found.id, limit=limit, offset=offset)
    output.emit(
        page,
        output_format,
        columns=EGRESS_COLUMNS,
        rows=page.events,
        empty=f"{found.name} has no egress log entries (only allowlist workspaces have them).",
    )
