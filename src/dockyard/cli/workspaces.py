"""Workspace commands, verb-first as in Coder: `dockyard create | list | show | start | stop | restart | delete |
update | logs | builds | cancel`.

A NAME (yours, `owner/name`, or an id) is resolved once; every later request of the command uses the id it
resolved to, so that all of them act on the same workspace.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from dockyard.cli import config, output
from dockyard.cli.errors import CliError, build_request
from dockyard.cli.output import Column, OutputFormat, OutputOption
from dockyard.sdk import ApiError, Client, ConnectionFailed
from dockyard.sdk import models as m
from dockyard.units import format_duration, parse_duration

_ACTIVE = frozenset({m.BuildStatus.PENDING, m.BuildStatus.RUNNING, m.BuildStatus.CANCELING})
_POLL_SECONDS = 0.5
# Once the build has ended the server closes the log stream within a poll; this only bounds a stuck one.
_LOG_GRACE_SECONDS = 5.0
_LOG_TAIL = 20
_LOG_WINDOW = 10
_PAGE = 500

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
    """Create a workspace from a template and (by default) wait until it runs."""
    limit = _duration(timeout, "--timeout")
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
        output.message(
            f"Creating workspace {created.name} from {created.template_name} {created.template_version_name} "
            f"(build #{build.number})"
        )
        if wait:
            final = _wait(client, created, build, ref=created.name, timeout=limit)
        else:
            final = created
            output.message(f"Follow its progress with `dockyard logs {created.name} --follow`")
    if output_format is OutputFormat.JSON:
        output.print_json(final)
    else:
        _print_details(final)


def _parameters(pairs: Sequence[str] | None, file: Path | None) -> dict[str, Any]:
    """Values as strings, as a form would send them: the server coerces each to its parameter's type."""
    values = _parameter_file(file) if file is not None else {}
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


def _parameter_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from exc
    try:
        # BaseLoader keeps every scalar a string, as --param does: YAML's own typing would read a branch
        # named 1.10 as the number 1.1 before the server could type it by the parameter's declaration.
        data = yaml.load(text, Loader=yaml.BaseLoader)  # noqa: S506 - BaseLoader builds only str, list, dict
    except yaml.YAMLError as exc:
        raise CliError(f"{path} is not valid YAML", detail=str(exc)) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CliError(f"{path} must map parameter names to values", hint="e.g. `branch: main`")
    return dict(data)


# --- waiting for a build ---------------------------------------------------------------------------------------


class _Progress:
    """What --wait shows on stderr: status changes, and the build's log lines as they stream.

    On a terminal the newest log lines scroll under a spinner and vanish when the build ends (a failure prints
    its tail for good); elsewhere (CI, a pipe) every line is printed, since nothing can be taken back there.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.status: m.WorkspaceStatus | None = None
        self.shown = 0  # id of the last log line printed for good
        self.started = time.monotonic()
        self.window: deque[str] = deque(maxlen=_LOG_WINDOW)
        self.spinner = Spinner("dots")
        console = Console(stderr=True, highlight=False)
        self.live = (
            Live(console=console, transient=True, get_renderable=self._render, refresh_per_second=8)
            if console.is_terminal
            else None
        )

    def __enter__(self) -> _Progress:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.live is not None:
            self.live.stop()

    def _render(self) -> RenderableType:
        elapsed = format_duration(timedelta(seconds=int(time.monotonic() - self.started)))
        state = self.status.value if self.status else "waiting"
        self.spinner.update(text=Text(f"{self.name} is {state} ({elapsed})"))
        lines = [Text(line, style="dim", no_wrap=True, overflow="ellipsis") for line in self.window]
        return Group(*lines, self.spinner)

    def say(self, text: str) -> None:
        if self.live is not None:
            self.live.console.print(Text(text), soft_wrap=True)
        else:
            output.message(text)

    def change(self, status: m.WorkspaceStatus) -> None:
        if status is not self.status:
            self.status = status
            self.say(f"{self.name}: {status.value}")

    def log(self, line: m.BuildLogLine) -> None:
        if self.live is not None:
            self.window.append(log_text(line))
        else:
            output.message(log_text(line))
            self.shown = line.id


_LogItem = m.BuildLogLine | ApiError | ConnectionFailed | None


def _follow(credentials: config.Credentials, build_id: str, sink: queue.Queue[_LogItem]) -> None:
    """Stream a build's log into `sink`; None marks the end of the stream.

    Runs in a thread with a client of its own: when waiting is given up the stream is left to end with the build
    (or with the process), after the command has closed its own client.
    """
    client = config.client_factory(credentials.url, credentials.token)
    try:
        for line in client.follow_build_logs(build_id):
            sink.put(line)
    except (ApiError, ConnectionFailed) as exc:
        sink.put(exc)
    finally:
        client.close()
        sink.put(None)


def _drain(lines: queue.Queue[_LogItem], progress: _Progress, *, seconds: float) -> None:
    """Show the log lines that arrive within `seconds` (those already queued when it is 0)."""
    until = time.monotonic() + seconds
    while True:
        try:
            item = lines.get(timeout=max(0.0, until - time.monotonic()))
        except queue.Empty:
            return
        if isinstance(item, m.BuildLogLine):
            progress.log(item)
        elif item is not None:
            progress.say(f"warning: cannot follow the build log: {item}")


def _wait(
    client: Client, workspace: m.Workspace, build: m.WorkspaceBuild, *, ref: str, timeout: float
) -> m.Workspace:
    """Show `build`'s progress until it ends and return the workspace then.

    A failed or canceled build, or a timeout, is a `CliError` (exit 1). Ctrl-C stops waiting (exit 130) but
    leaves the build running: it belongs to the server, not to this process.
    """
    lines: queue.Queue[_LogItem] = queue.Queue()
    follower = threading.Thread(
        target=_follow,
        args=(config.credentials(), build.id, lines),
        name=f"dockyard-build-logs-{build.id}",
        daemon=True,
    )
    progress = _Progress(workspace.name)
    deadline = time.monotonic() + timeout
    try:
        follower.start()
        with progress:
            while True:
                current = client.get_workspace(workspace.id)
                latest = current.latest_build
                if latest.id != build.id or latest.status not in _ACTIVE:
                    break
                progress.change(current.status)
                if time.monotonic() >= deadline:
                    raise CliError(
                        f"timed out after {format_duration(timedelta(seconds=timeout))} waiting for "
                        f"{workspace.name} (still {current.status.value})",
                        hint=_follow_hint(build, ref),
                    )
                _drain(lines, progress, seconds=_POLL_SECONDS)
            follower.join(_LOG_GRACE_SECONDS)
            _drain(lines, progress, seconds=0)
    except KeyboardInterrupt:
        output.message(f"Stopped waiting; {_follow_hint(build, ref)}.")
        raise typer.Exit(130) from None
    finished = latest if latest.id == build.id else client.get_build(build.id)
    if finished.status is not m.BuildStatus.SUCCEEDED:
        _print_tail(client, finished, after=progress.shown)
        verb = "was canceled" if finished.status is m.BuildStatus.CANCELED else "failed"
        raise CliError(
            f"build #{finished.number} ({finished.transition.value}) of {workspace.name} {verb}",
            detail=current.status_reason or finished.error,
            hint=f"see its whole log with `dockyard logs {ref} --build {finished.number}`",
        )
    took = finished.timings.get("total")
    output.message(
        f"Workspace {workspace.name} is {current.status.value}"
        + (f" (build #{finished.number} took {seconds_text(took)})" if took is not None else "")
    )
    return current


def _follow_hint(build: m.WorkspaceBuild, ref: str) -> str:
    return (
        f"build #{build.number} goes on: follow it with `dockyard logs {ref} --follow`, "
        f"or cancel it with `dockyard cancel {ref}`"
    )


def _print_tail(client: Client, build: m.WorkspaceBuild, *, after: int) -> None:
    """The end of a failed build's log, but none of the lines already on screen."""
    tail = [line for line in client.build_logs(build.id)[-_LOG_TAIL:] if line.id > after]
    if tail:
        output.message(f"Last lines of build #{build.number}'s log:")
        for line in tail:
            output.message(log_text(line))


def _duration(text: str, option: str) -> float:
    try:
        seconds = parse_duration(text).total_seconds()
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None
    if seconds <= 0:
        raise typer.BadParameter("must be more than 0", param_hint=option)
    return seconds


# --- start, stop, restart, delete ------------------------------------------------------------------------------

_VERBS = {m.Transition.START: "Starting", m.Transition.STOP: "Stopping", m.Transition.DELETE: "Deleting"}


def _queue(client: Client, workspace: m.Workspace, transition: m.Transition, *, ref: str) -> m.WorkspaceBuild:
    if transition is m.Transition.DELETE:
        build = client.delete_workspace(workspace.id)
    else:
        build = client.create_build(workspace.id, m.CreateBuildRequest(transition=transition))
    output.message(f"{_VERBS[transition]} {ref} (build #{build.number})")
    return build


def _apply(
    client: Client, workspace: m.Workspace, transition: m.Transition, *, ref: str, wait: bool, timeout: float
) -> m.Workspace:
    build = _queue(client, workspace, transition, ref=ref)
    if wait:
        return _wait(client, workspace, build, ref=ref, timeout=timeout)
    output.message(f"Follow its progress with `dockyard logs {ref} --follow`")
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
            output.message(f"Updated {workspace}: {_changes(found, parameters, version=version, ttl=ttl)}")
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


def _changes(
    workspace: m.Workspace, parameters: dict[str, Any] | None, *, version: str | None, ttl: str | None
) -> str:
    changes = [
        f"{key}={value_text(workspace.parameters.get(key, value))}"
        for key, value in (parameters or {}).items()
    ]
    if version is not None:
        changes.append(f"template version {workspace.template_version_name}")
    if ttl is not None:
        changes.append("no TTL" if ttl == "0" else f"TTL {ttl}")
    return ", ".join(changes)


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
    found: list[m.Workspace] = []
    with config.session() as client:
        while True:
            page = client.list_workspaces(
                owner=None if everyone else "me",
                template=template,
                status=status,
                limit=_PAGE,
                offset=len(found),
            )
            found += page.workspaces
            if not page.workspaces or len(found) >= page.count:
                break
    columns: list[Column[m.Workspace]] = [Column("NAME", lambda w: w.name)]
    if everyone:
        columns.append(Column("OWNER", lambda w: w.owner_name))
    columns += [
        Column("TEMPLATE", _template_text),
        Column("STATUS", lambda w: w.status.value),
        Column(
            "LAST BUILD", lambda w: f"{w.latest_build.transition.value}, {_ago(w.latest_build.created_at)}"
        ),
        Column("TTL", _ttl_text),
    ]
    filtered = status is not None or template is not None
    output.emit(
        m.WorkspaceList(workspaces=found, count=len(found)),
        output_format,
        columns=columns,
        rows=found,
        empty="No workspaces match."
        if filtered
        else "No workspaces yet; create one with `dockyard create --template TEMPLATE`.",
    )


def show(workspace: WorkspaceArg, output_format: OutputOption = OutputFormat.TABLE) -> None:
    """Show a workspace: status, parameters and its latest build with the time each phase took."""
    with config.session() as client:
        found = client.get_workspace(workspace)
    if output_format is OutputFormat.JSON:
        output.print_json(found)
    else:
        _print_details(found)


def _print_details(workspace: m.Workspace) -> None:
    pairs = [
        ("NAME", workspace.name),
        ("ID", workspace.id),
        ("OWNER", workspace.owner_name),
        ("TEMPLATE", _template_text(workspace)),
        ("STATUS", workspace.status.value),
    ]
    if workspace.status_reason:
        pairs.append(("REASON", workspace.status_reason))
    pairs += [
        ("TTL", _ttl_text(workspace)),
        ("DEADLINE", output.when(workspace.deadline, never="none")),
        ("CREATED", output.when(workspace.created_at)),
        ("LAST USED", output.when(workspace.last_used_at)),
    ]
    output.print_rich(output.fields(pairs))
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


# --- builds, logs, cancel --------------------------------------------------------------------------------------

_BUILD_COLUMNS: list[Column[m.WorkspaceBuild]] = [
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


def builds(workspace: WorkspaceArg, output_format: OutputOption = OutputFormat.TABLE) -> None:
    """List a workspace's builds, newest first."""
    with config.session() as client:
        found = client.get_workspace(workspace)
        listed = client.list_builds(found.id)
    output.emit(listed, output_format, columns=_BUILD_COLUMNS, rows=listed)


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
                typer.echo(log_text(line))
            if not lines:
                output.message(f"Build #{build.number} has no log lines yet.")
            return
        for line in client.follow_build_logs(build.id):
            typer.echo(log_text(line))
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
        if build.status not in _ACTIVE:
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


# --- formatting ------------------------------------------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def log_text(line: m.BuildLogLine) -> str:
    # UTC, like every time the CLI prints, so that a log reads the same wherever it is looked at.
    return f"{_utc(line.time):%H:%M:%S} {line.stage:<9} | {line.output}"


def value_text(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(value_text(v) for v in value)
    return str(value)


def seconds_text(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.2f}s"
    return format_duration(timedelta(seconds=round(seconds)))


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


def _span(delta: timedelta) -> str:
    """A coarse span, such as 5m, 3h20m or 2d4h: lists are read at a glance."""
    minutes = int(delta.total_seconds()) // 60
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    return f"{minutes}m"


def _ago(moment: datetime) -> str:
    delta = datetime.now(UTC) - _utc(moment)
    return "just now" if delta < timedelta(minutes=1) else f"{_span(delta)} ago"


def _ttl_text(workspace: m.Workspace) -> str:
    if workspace.ttl_ms is None:
        return "-"
    text = format_duration(timedelta(milliseconds=workspace.ttl_ms))
    if workspace.deadline is None:
        return text
    left = _utc(workspace.deadline) - datetime.now(UTC)
    return f"{text} ({_span(left)} left)" if left > timedelta(0) else f"{text} (due)"
