"""`dockyard devcontainer …`: dev container configurations (devcontainer.json), read locally.

`read-configuration` prints what the reference CLI's `devcontainer read-configuration` prints, so scripts written
for one work with the other. The reader is imported inside the command: the rest of the CLI starts without it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from dockyard.cli import output
from dockyard.cli.errors import CliError
from dockyard_sdk.models import ValidationDetail

app = typer.Typer(help="Dev container configurations (devcontainer.json).", no_args_is_help=True)

_ID_LABEL = re.compile(r"(.+?)=(.+)", re.DOTALL)


@app.command("read-configuration")
def read_configuration(
    workspace_folder: Annotated[
        Path,
        typer.Option(
            "--workspace-folder",
            help="The workspace; its devcontainer.json is looked up in the specification's order.",
        ),
    ],
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Read this devcontainer.json instead of looking one up."),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", help="Read .devcontainer/NAME/devcontainer.json (one of several)."),
    ] = None,
    id_label: Annotated[
        list[str] | None,
        typer.Option(
            "--id-label",
            help="NAME=VALUE label identifying the container (repeatable); resolves ${devcontainerId}.",
        ),
    ] = None,
    mount_workspace_git_root: Annotated[
        bool,
        typer.Option(
            "--mount-workspace-git-root/--no-mount-workspace-git-root",
            help="Mount the git repository around the workspace rather than the workspace alone.",
        ),
    ] = True,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Also refuse unknown variables and a configuration without an image, Dockerfile or Compose "
            "file, as creating a workspace does.",
        ),
    ] = False,
) -> None:
    """Print the resolved configuration as JSON, in the shape of `devcontainer read-configuration`."""
    from dockyard.errors import DockyardError
    from dockyard.templates.devcontainer import read_configuration as read

    if config is not None and name is not None:
        raise CliError("--config and --name cannot be used together.")
    labels: dict[str, str] | None = None
    if id_label:
        labels = {}
        for label in id_label:
            match = _ID_LABEL.fullmatch(label)
            if match is None:
                raise CliError(
                    "Invalid --id-label.",
                    validations=[ValidationDetail(field="--id-label", detail=f"{label!r} is not NAME=VALUE")],
                )
            labels[match.group(1)] = match.group(2)
    try:
        result = read(
            str(workspace_folder),
            config_file=str(config) if config is not None else None,
            name=name,
            id_labels=labels,
            mount_workspace_git_root=mount_workspace_git_root,
            strict=strict,
        )
    except DockyardError as exc:
        raise CliError(
            exc.message,
            detail=exc.detail,
            validations=[
                ValidationDetail(field=v.field, detail=v.detail, file=v.file, line=v.line)
                for v in exc.validations
            ],
        ) from exc
    for warning in result.warnings:
        output.warning(str(warning))
    # A lone surrogate (legal in JSON's \u escapes) cannot be encoded; written escaped, as JavaScript writes it.
    sys.stdout.buffer.write(result.reference_json().encode("utf-8", "backslashreplace") + b"\n")
    sys.stdout.flush()
