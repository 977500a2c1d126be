"""`dockyard doctor [--prune]`: the runtime's health, drifted workspaces and orphaned resources."""

from __future__ import annotations

from typing import Annotated

import typer

from dockyard.cli import config, output
from dockyard.cli.errors import CliError
from dockyard.cli.output import Column, OutputFormat, OutputOption
from dockyard.sdk import models as m

_ORPHAN_COLUMNS: list[Column[m.OrphanedResource]] = [
    Column("KIND", lambda o: o.kind),
    Column("NAME", lambda o: o.name),
    Column("WORKSPACE ID", lambda o: o.workspace_id),
]


def doctor(
    prune: Annotated[
        bool, typer.Option("--prune", help="Remove the orphaned resources (owners only).")
    ] = False,
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """Check the runtime, and list drifted workspaces and orphaned resources."""
    with config.session() as client:
        report = client.prune() if prune else client.doctor()
        if prune and report.runtime_ok:
            removed = report.removed
            output.message(f"Removed {_count(removed)}" + "".join(f"\n  {o.kind} {o.name}" for o in removed))
    if output_format is OutputFormat.JSON:
        output.print_json(report)
    else:
        _print(report)
    if not report.runtime_ok:
        raise CliError(f"the {report.runtime} runtime is unavailable", detail=report.runtime_error)
    if report.orphans and not prune:
        output.message(f"Found {_count(report.orphans)}; remove them with `dockyard doctor --prune`")


def _count(orphans: list[m.OrphanedResource]) -> str:
    return f"{len(orphans)} orphaned resource{'' if len(orphans) == 1 else 's'}"


def _print(report: m.DoctorReport) -> None:
    runtime = f"{report.runtime}: ok" if report.runtime_ok else f"{report.runtime}: unavailable"
    output.print_rich(
        output.fields(
            [
                ("RUNTIME", runtime),
                ("DRIFTED", ", ".join(report.drifted) or "none"),
                ("ORPHANS", str(len(report.orphans)) if report.orphans else "none"),
                ("WARM NETWORKS", ", ".join(f"{c} {n}" for c, n in report.warm_networks.items()) or "none"),
            ]
        )
    )
    if report.orphans:
        typer.echo()
        output.print_rich(output.table(_ORPHAN_COLUMNS, report.orphans))
