"""Workspace commands, verb-first as in Coder: `dockyard create | list | show | start | stop | restart | delete |
update | logs | builds | cancel`.

A NAME (yours, `owner/name`, or an id) is resolved once; every later request of the command uses the id it
resolved to, so that all of them act on the same workspace.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from dockyard.cli import config, creation, listing, output, progress, render, transitions
from dockyard.cli.errors import CliError, build_request
from dockyard.cli.output import OutputFormat, OutputOption
from dockyard_sdk import Client
from dockyard_sdk import models as m
from dockyard_sdk.units import parse_duration

WorkspaceArg = Annotated[
    str, typer.Argument(metavar="NAME", help="Workspace: your workspace's name, owner/name, or an id.")
]
WaitOption = Annotated[
    bool, typer.Option("--wait/--no-wait", help="Wait for the build to finish, showing its progress.")
]
TimeoutOption = Annotated[str, typer.Option("--timeout", help="How long --wait waits at most, e.g. 30m.")]
ParamOption = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        "-p",
        metavar="KEY=VALUE",
        help="A parameter value (typed by the template); repeat for more.",
    ),
]
ParamFileOption = Annotated[
    Path | None,
    typer.Option(
        "--param-file", dir_okay=False, help="A YAML file of parameter values; --param values override it."
    ),
]


# --- create ----------------------------------------------------------------------------------------------------


def create(
    template: Annotated[str, typer.Option("--template", "-t", help="Template name or id.")],
    name: Annotated[
        str | None, typer.Argument(metavar="NAME", help="Workspace name; generated when left out.")
    ] = None,
    params: ParamOption = None,
    param_file: ParamFileOption = None,
    ttl: Annotated[
        str | None, typer.Option("--ttl", help="Time until the template's TTL action, e.g. 4h.")
    ] = None,
    version: Annotated[
        str | None, typer.Option("--version", help="Template version (v3 or an id); default: the active one.")
    ] = None,
    wait: WaitOption = True,
    timeout: TimeoutOption = "30m",
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """Create a workspace from a template and (by default) wait until it runs and its agent is ready."""
    limit = _duration(timeout, "--timeout")
    started = time.monotonic()
    request = build_request(
        m.CreateWorkspaceRequest,
        names={"name": "NAME", "template": "--template", "template_version_id": "--version", "ttl": "--ttl"},
        template=template,
        name=name,
        template_version_id=version,
        parameters=_parameters(params, param_file) or None,
        ttl=ttl,
    )
    with config.session() as client:
        created = client.create_workspace(request)
        build = created.latest_build
        output.message(creation.creating_text(created.model_dump(mode="json")))
        if wait:
            # Only `create` waits for the agent; start, stop and the rest do not pay for the SSH modules.
            from dockyard.cli import connect

            final = progress.wait(client, created, build, ref=created.name, timeout=limit)
            # The build ends when the container runs; the workspace is usable once its agent has connected
            # and run the startup script.
            final = connect.wait_ready(
                client,
                final,
                ref=created.name,
                timeout=max(1.0, limit - (time.monotonic() - started)),
                strict=True,
                whole_script=True,
            )
        else:
            final = created
            output.message(f"Follow its progress with `dockyard logs {created.name} --follow`")
    if output_format is OutputFormat.JSON:
        output.print_json(final)
    else:
        render.print_details(final)


def _parameters(pairs: Sequence[str] | None, file: Path | None) -> dict[str, Any]:
    """Values as strings, as a form would send them: the server coerces each to its parameter's type."""
    values = creation.parameter_file(file) if file is not None else {}
    problems = []
    for pair in pairs or ():
        key, equals, value = pair.partition("=")
        if not equals or not key.strip():
            problems.append(m.ValidationDetail(field="--param", detail=f"{pair!r} is not KEY=VALUE"))
        else:
            values[key.strip()] = value
    if problems:
        raise CliError("Invalid request.", validations=problems)
    return values


def _duration(text: str, option: str) -> float:
    try:
        seconds = parse_duration(text).total_seconds()
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None
    if seconds <= 0:
        raise typer.BadParameter("must be more than 0", param_hint=option)
    return seconds


# --- start, stop, restart, delete ------------------------------------------------------------------------------


def _queue(client: Client, workspace: m.Workspace, transition: m.Transition, *, ref: str) -> m.WorkspaceBuild:
    if transition is m.Transition.DELETE:
        build = client.delete_workspace(workspace.id)
    else:
        build = client.create_build(workspace.id, m.CreateBuildRequest(transition=transition))
    output.message(transitions.queued_text(transition.value, ref, build.number))
    return build


def _apply(
    client: Client, workspace: m.Workspace, transition: m.Transition, *, ref: str, wait: bool, timeout: float
) -> m.Workspace:
    build = _queue(client, workspace, transition, ref=ref)
    if wait:
        return progress.wait(client, workspace, build, ref=ref, timeout=timeout)
    output.message(transitions.follow_text(ref))
    return client.get_workspace(workspace.id)


def _transition(
    ref: str, transition: m.Transition, *, wait: bool, timeout: str, output_format: OutputFormat
) -> None:
    limit = _duration(timeout, "--timeout")
    with config.session() as client:
        workspace = client.get_workspace(ref)
        final = _apply(client, workspace, transition, ref=ref, wait=wait, timeout=limit)
    if output_format is OutputFormat.JSON:
        output.print_json(final)


def start(
    workspace: WorkspaceArg,
    wait: WaitOption = True,
    timeout: TimeoutOption = "30m",
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """Start a stopped workspace."""
    _transition(workspace, m.Transition.START, wait=wait, timeout=timeout, output_format=output_format)


def stop(
    workspace: WorkspaceArg,
    wait: WaitOption = True,
    timeout: TimeoutOption = "30m",
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """Stop a workspace; its home volume is kept for the next start."""
    _transition(workspace, m.Transition.STOP, wait=wait, timeout=timeout, output_format=output_format)


def _restart(client: Client, workspace: m.Workspace, *, ref: str, wait: bool, timeout: float) -> m.Workspace:
    # The server runs one build at a time per workspace, so the stop is always waited for.
    if workspace.status is not m.WorkspaceStatus.STOPPED:
        workspace = _apply(client, workspace, m.Transition.STOP, ref=ref, wait=True, timeout=timeout)
    return _apply(client, workspace, m.Transition.START, ref=ref, wait=wait, timeout=timeout)


def restart(
    workspace: WorkspaceArg,
    wait: WaitOption = True,
    timeout: TimeoutOption = "30m",
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """Stop a workspace, wait, and start it again (a stopped one is just started)."""
    limit = _duration(timeout, "--timeout")
    with config.session() as client:
        found = client.get_workspace(workspace)
        final = _restart(client, found, ref=workspace, wait=wait, timeout=limit)
    if output_format is OutputFormat.JSON:
        output.print_json(final)


def _can_prompt() -> bool:
    return sys.stdin.isatty()


def delete(
    workspace: WorkspaceArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking.")] = False,
    wait: WaitOption = True,
    timeout: TimeoutOption = "30m",
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """Delete a workspace with its container, network and home volume."""
    limit = _duration(timeout, "--timeout")
    if not yes and not _can_prompt():
        # A prompt nobody can answer would hang a script; a delete without one must be asked for.
        raise CliError(f"not deleting {workspace} without confirmation", hint="pass --yes to delete it")
    with config.session() as client:
        found = client.get_workspace(workspace)
        if not yes:
            typer.confirm(
                f"Delete workspace {found.owner_name}/{found.name} and its home volume?", abort=True, err=True
            )
        final = _apply(client, found, m.Transition.DELETE, ref=workspace, wait=wait, timeout=limit)
    if output_format is OutputFormat.JSON:
        output.print_json(final)


# --- update ----------------------------------------------------------------------------------------------------


def update(
    workspace: WorkspaceArg,
    params: ParamOption = None,
    param_file: ParamFileOption = None,
    version: Annotated[
        str | None, typer.Option("--version", help="Move to this template version (v3, an id, or `active`).")
    ] = None,
    ttl: Annotated[
        str | None, typer.Option("--ttl", help="New TTL from the next start, e.g. 4h; 0 removes it.")
    ] = None,
    restart_now: Annotated[
        bool, typer.Option("--restart", help="Restart the workspace now to apply the changes.")
    ] = False,
    wait: WaitOption = True,
    timeout: TimeoutOption = "30m",
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """Change parameters, template version or TTL; they apply at the workspace's next start."""
    limit = _duration(timeout, "--timeout")
    parameters = _parameters(params, param_file) or None
    if parameters is None and version is None and ttl is None and not restart_now:
        raise CliError("nothing to update", hint="give --param, --param-file, --version or --ttl")
    request = build_request(
        m.UpdateWorkspaceRequest,
        names={"parameters": "--param", "template_version_id": "--version", "ttl": "--ttl"},
        parameters=parameters,
        template_version_id=version,
        ttl=ttl,
    )
    with config.session() as client:
        found = client.get_workspace(workspace)
        if request.model_fields_set:
            found = client.update_workspace(found.id, request)
            output.message(
                f"Updated {workspace}: {render.changes_text(found, parameters, version=version, ttl=ttl)}"
            )
        if restart_now:
            found = _restart(client, found, ref=workspace, wait=wait, timeout=limit)
        elif found.status is m.WorkspaceStatus.STOPPED:
            output.message(f"The changes apply when it next starts (`dockyard start {workspace}`)")
        else:
            output.message(
                f"The changes apply at its next start: run `dockyard restart {workspace}`, "
                "or pass --restart to update"
            )
    if output_format is OutputFormat.JSON:
        output.print_json(found)


# --- list, show ------------------------------------------------------------------------------------------------


def list_workspaces(
    everyone: Annotated[
        bool, typer.Option("--all", "-a", help="Everyone's workspaces (owners see all; others only theirs).")
    ] = False,
    status: Annotated[
        m.WorkspaceStatus | None, typer.Option("--status", case_sensitive=False, help="Only this status.")
    ] = None,
    template: Annotated[str | None, typer.Option("--template", "-t", help="Only this template.")] = None,
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """List your workspaces (--all: everyone's)."""
    args = listing.ListArgs(
        everyone=everyone,
        status=status.value if status is not None else None,
        template=template,
        output=output_format.value,
    )
    with config.session() as client:
        listing.show(client, args)


def show(workspace: WorkspaceArg, output_format: OutputOption = OutputFormat.TABLE) -> None:
    """Show a workspace: status, parameters and its latest build with the time each phase took."""
    with config.session() as client:
        found = client.get_workspace(workspace)
    if output_format is OutputFormat.JSON:
        output.print_json(found)
    else:
        render.print_details(found)


# --- builds, logs, cancel --------------------------------------------------------------------------------------


def builds(workspace: WorkspaceArg, output_format: OutputOption = OutputFormat.TABLE) -> None:
    """List a workspace's builds, newest first."""
    with config.session() as client:
        found = client.get_workspace(workspace)
        listed = client.list_builds(found.id)
    output.emit(listed, output_format, columns=render.BUILD_COLUMNS, rows=listed)


def logs(
    workspace: WorkspaceArg,
    number: Annotated[
        int | None, typer.Option("--build", "-b", min=1, help="Build number; default: the latest build.")
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream new lines until the build ends.")
    ] = False,
) -> None:
    """Print a build's log (the latest build's unless --build is given)."""
    with config.session() as client:
        found = client.get_workspace(workspace)
        build = _build(client, found, number, ref=workspace)
        if not follow:
            lines = client.build_logs(build.id)
            for line in lines:
                typer.echo(render.log_text(line))
            if not lines:
                output.message(f"Build #{build.number} has no log lines yet.")
            return
        for line in client.follow_build_logs(build.id):
            typer.echo(render.log_text(line))
        ended = client.get_build(build.id)
    output.message(
        f"Build #{ended.number} ({ended.transition.value}) {ended.status.value}"
        + (f": {ended.error}" if ended.error else "")
    )


def _build(client: Client, workspace: m.Workspace, number: int | None, *, ref: str) -> m.WorkspaceBuild:
    if number is None or number == workspace.latest_build.number:
        return workspace.latest_build
    for build in client.list_builds(workspace.id):
        if build.number == number:
            return build
    raise CliError(f"{ref} has no build #{number}", hint=f"list its builds with `dockyard builds {ref}`")


def cancel(workspace: WorkspaceArg) -> None:
    """Cancel the workspace's build in progress."""
    with config.session() as client:
        found = client.get_workspace(workspace)
        build = found.latest_build
        if build.status not in progress.ACTIVE:
            raise CliError(
                f"{workspace} has no build in progress",
                detail=f"its latest build, #{build.number} ({build.transition.value}), {build.status.value}",
            )
        canceled = client.cancel_build(build.id)
    if canceled.status is m.BuildStatus.CANCELED:
        output.message(f"Canceled build #{canceled.number} ({canceled.transition.value})")
    else:
        output.message(
            f"Canceling build #{canceled.number} ({canceled.transition.value}); it stops at its next step"
        )
