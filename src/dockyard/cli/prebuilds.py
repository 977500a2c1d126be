"""`dockyard prebuilds [--template NAME]`: the warm pools templates keep, per preset."""

from __future__ import annotations

from typing import Annotated

import typer

from dockyard.cli import config, output
from dockyard.cli.output import Column, OutputFormat, OutputOption
from dockyard_sdk import models as m

_COLUMNS: list[Column[m.PrebuildPreset]] = [
    Column("TEMPLATE", lambda p: p.template),
    Column("VERSION", lambda p: f"v{p.version}"),
    Column("PARAMETERS", lambda p: ", ".join(f"{k}={v}" for k, v in sorted(p.parameters.items())) or "-"),
    Column("DESIRED", lambda p: str(p.desired)),
    Column("READY", lambda p: str(p.ready)),
    Column("BUILDING", lambda p: str(p.building)),
    Column("FAILED", lambda p: str(p.failed)),
]


def prebuilds(
    template: Annotated[
        str | None, typer.Option("--template", "-t", help="Only this template's presets.")
    ] = None,
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """List warm workspace pools (prebuilds): each preset's desired, ready and building members.

    A create from the template's active version with exactly a preset's parameter values claims a ready member.
    """
    with config.session() as client:
        listed = client.prebuilds(template)
    if output_format is OutputFormat.JSON:
        output.print_json(listed)
        return
    output.print_rich(output.table(_COLUMNS, listed.presets))
    if listed.outdated:
        output.message(f"{listed.outdated} member(s) of older versions are being removed")
