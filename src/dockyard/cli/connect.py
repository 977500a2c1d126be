"""Getting into a workspace: `dockyard exec | ssh | port-forward`, and waiting for its agent to be ready.

Every path ends in a WebSocket to the server (`sdk.streams`), which pairs it with a stream from the workspace's
agent; `ssh` hands the terminal to OpenSSH, with this same program as its ProxyCommand (`ssh --stdio`).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from dockyard.cli import config, creation, output, progress, sshconfig, sshkeys
from dockyard.cli.errors import CliError, build_request
from dockyard.cli.output import OutputFormat, OutputOption
from dockyard.cli.render import log_text
from dockyard.cli.transitions import log_line_text, parse_time
from dockyard_sdk import ApiError, Client, ConnectionFailed
from dockyard_sdk import models as m
from dockyard_sdk.lazy import load_later
from dockyard_sdk.units import format_duration, parse_duration

if TYPE_CHECKING:
    from dockyard_sdk import streams
else:
    # websockets loads with the first stream: `dockyard list` and `--help` import this module too.
    streams = load_later("dockyard_sdk.streams")

WorkspaceArg = Annotated[
    str, typer.Argument(metavar="NAME", help="Workspace: your workspace's name, owner/name, or an id.")
]
_STARTABLE = {m.WorkspaceStatus.STOPPED, m.WorkspaceStatus.FAILED, m.WorkspaceStatus.CANCELED}
_SETTLED = {m.AgentLifecycle.READY, m.AgentLifecycle.START_ERROR, m.AgentLifecycle.START_TIMEOUT}
_POLL_SECONDS = 1.0
# An editor reconnects often; renewing this early keeps its next connection from meeting an expired certificate.
_RENEW_WITHIN = timedelta(hours=8)


def _seconds(text: str, option: str, *, unit: float = 1) -> float:
    """A duration option. A bare number counts in `unit` seconds: a command's timeout reads "30" as seconds,
    where `parse_duration` (made for TTLs) would read hours."""
    try:
        if re.fullmatch(r"\d+(\.\d+)?", text.strip()):
            value = float(text) * unit
        else:
            value = parse_duration(text).total_seconds()
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None
    if value <= 0:
        raise typer.BadParameter("must be more than 0", param_hint=option)
    return value


def _target(client: Client, ref: str) -> str:
    """What a stream's URL names the workspace by: the server resolves ids and your own names itself."""
    return client.get_workspace(ref).id if "/" in ref else ref


# --- waiting for the agent -------------------------------------------------------------------------------------


class _AgentProgress(progress.LiveStatus):
    """The agent's state on stderr: a spinner with the newest startup-script lines on a terminal, every change
    and line printed elsewhere."""

    def __init__(self, name: str) -> None:
        # Before the base class: it renders the label once as it builds its display.
        self.state = ""
        super().__init__(name)

    def label(self) -> str:
        return f"{self.name}: {self.state or creation.WAITING}"

    def change(self, state: str) -> None:
        if state != self.state:
            self.state = state
            if self.live is None:
                output.message(f"{self.name}: {state}")

    def log(self, line: m.BuildLogLine) -> None:
        if self.live is not None:
            self.window.append(log_text(line))
        else:
            output.message(log_text(line))


def _agent_state(agent: m.WorkspaceAgent | None) -> str:
    return creation.agent_state(agent.model_dump(mode="json") if agent is not None else None)


def wait_ready(
    client: Client,
    workspace: m.Workspace,
    *,
    ref: str,
    timeout: float,
    strict: bool,
    whole_script: bool = False,
) -> m.Workspace:
    """Wait until the running workspace's agent has connected and finished its startup script.

    With `whole_script` all of the startup script's output is shown (the agent may have finished before this
    is called, right after the build), otherwise only what it writes from now on. A failed or timed-out startup
    script prints the end of its output; with `strict` it is then an error (exit 1), otherwise a warning (an SSH
    session is how one repairs a startup script).
    """
    deadline = time.monotonic() + timeout
    build_id = workspace.latest_build.id
    cursor = 0
    if not whole_script:
        seen = client.build_logs(build_id)
        cursor = seen[-1].id if seen else 0
    current = workspace
    try:
        with _AgentProgress(workspace.name) as shown:

            def show_new_lines() -> None:
                nonlocal cursor
                for line in client.build_logs(build_id, after=cursor):
                    cursor = line.id
                    if line.stage in creation.AGENT_STAGES:
                        shown.log(line)

            while current.agent is None or current.agent.lifecycle not in _SETTLED:
                if current.status is not m.WorkspaceStatus.RUNNING:
                    raise CliError(
                        f"{workspace.name} is {current.status.value}, not running",
                        detail=current.status_reason,
                        hint=f"see its builds with `dockyard builds {ref}`",
                    )
                shown.change(_agent_state(current.agent))
                show_new_lines()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CliError(
                        f"timed out after {format_duration(timedelta(seconds=timeout))} waiting for the "
                        f"agent of {workspace.name} ({shown.state})",
                        hint=f"see its log with `dockyard logs {ref}`",
                    )
                current = client.get_workspace(
                    workspace.id, wait="ready", timeout=max(0.1, min(_POLL_SECONDS, remaining))
                )
            if whole_script and current.agent.lifecycle is m.AgentLifecycle.READY:
                show_new_lines()
    except KeyboardInterrupt:
        output.message("Stopped waiting for the agent.")
        raise typer.Exit(130) from None
    agent = current.agent
    dumped = agent.model_dump(mode="json")
    if agent.lifecycle is m.AgentLifecycle.READY:
        output.message(creation.ready_text(workspace.name, dumped))
        return current
    lines = [line.model_dump(mode="json") for line in client.build_logs(build_id)]
    problem, tail = creation.not_ready(workspace.name, dumped, lines)
    if not strict:
        output.warning(problem)
    if tail:
        output.message(creation.tail_heading(dumped))
        for line in tail:
            output.message(log_line_text(parse_time(line["time"]), line["stage"], line["output"]))
    if strict:
        raise CliError(problem, hint=f"see the whole log with `dockyard logs {ref}`")
    return current


def ensure_running(
    client: Client, workspace: m.Workspace, *, ref: str, wait: bool, timeout: float
) -> m.Workspace:
    """Start a stopped workspace (waiting for a build in progress first); with `wait`, wait for its agent."""
    started = time.monotonic()
    current = workspace
    if current.latest_build.status in progress.ACTIVE and wait:
        current = progress.wait(client, current, current.latest_build, ref=ref, timeout=timeout)
    started_now = current.status in _STARTABLE
    if started_now:
        build = client.start_workspace(current.id)
        output.message(f"Starting {ref} (build #{build.number})")
        if not wait:
            return current
        current = progress.wait(client, current, build, ref=ref, timeout=timeout)
    if not wait:
        return current
    if current.status is not m.WorkspaceStatus.RUNNING:
        raise CliError(f"{ref} is {current.status.value}", detail=current.status_reason)
    remaining = max(1.0, timeout - (time.monotonic() - started))
    return wait_ready(client, current, ref=ref, timeout=remaining, strict=False, whole_script=started_now)


# --- exec ------------------------------------------------------------------------------------------------------


def _environment(pairs: Sequence[str] | None) -> dict[str, str] | None:
    values: dict[str, str] = {}
    problems = []
    for pair in pairs or ():
        key, equals, value = pair.partition("=")
        if not equals or not key:
            problems.append(m.ValidationDetail(field="--env", detail=f"{pair!r} is not KEY=VALUE"))
        else:
            values[key] = value
    if problems:
        raise CliError("Invalid request.", validations=problems)
    return values or None


def _exit_status(exited: streams.Exited) -> int:
    """The status a shell would report: the exit code, or 128 + the number of the signal that ended it."""
    if exited.exit_code is not None:
        return exited.exit_code
    if exited.signal:
        try:
            return 128 + signal.Signals[f"SIG{exited.signal.upper().removeprefix('SIG')}"].value
        except KeyError:
            pass
    return 1


def _read_stdin() -> bytes:
    stream = sys.stdin.buffer
    read1 = getattr(stream, "read1", None)
    return bytes(read1(streams.CHUNK) if read1 is not None else stream.read(streams.CHUNK))


def _forward_stdin(proc_write: Callable[[bytes], None], close: Callable[[], None]) -> None:
    try:
        while data := _read_stdin():
            proc_write(data)
        close()
    except (OSError, ValueError, streams.StreamClosed, ApiError, ConnectionFailed):
        # The command has exited or the stream ended: whatever stdin had left is not wanted.
        pass


def exec_command(
    workspace: WorkspaceArg,
    command: Annotated[
        list[str],
        typer.Argument(
            metavar="COMMAND",
            help="One argument runs with `sh -c`; several run as they are. Put `--` before the command.",
            show_default=False,
        ),
    ],
    cwd: Annotated[
        str | None, typer.Option("--cwd", help="Working folder; default: the home folder.")
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option("--env", "-e", metavar="KEY=VALUE", help="An environment variable; repeat for more."),
    ] = None,
    timeout: Annotated[
        str | None, typer.Option("--timeout", help="Kill the command after this long, e.g. 90s or 10m.")
    ] = None,
    no_stdin: Annotated[
        bool, typer.Option("--no-stdin", "-n", help="Do not pass this program's stdin to the command.")
    ] = False,
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """Run a command in a workspace, streaming its output; exits with the command's exit code.

    Stdin is passed on when it is a pipe or a file. With -o json the command runs to its end, its result (exit code, stdout, stderr) is printed as JSON, and the exit code is 0 whenever that worked.
    """
    limit = _seconds(timeout, "--timeout") if timeout is not None else None
    request = build_request(
        m.ExecRequest,
        names={"command": "COMMAND", "cwd": "--cwd", "env": "--env", "timeout": "--timeout"},
        command=command[0] if len(command) == 1 else command,
        cwd=cwd,
        env=_environment(env),
        # Unset, the server's default applies: 60 s for -o json, no limit for a stream.
        timeout=limit,
    )
    piped = not no_stdin and not sys.stdin.isatty()
    with config.session() as client:
        target = _target(client, workspace)
        if output_format is OutputFormat.JSON:
            if piped:
                try:
                    request.stdin = sys.stdin.buffer.read().decode()
                except UnicodeDecodeError as exc:
                    raise CliError(
                        "stdin is not UTF-8 text, which -o json cannot send",
                        hint="leave out -o json to stream binary stdin",
                    ) from exc
            output.print_json(client.exec(target, request))
            return
        status = _stream(client, target, request, piped=piped)
    raise typer.Exit(status)


def _stream(client: Client, target: str, request: m.ExecRequest, *, piped: bool) -> int:
    interrupted = False
    with client.exec_stream(target, request) as proc:
        if piped:
            threading.Thread(
                target=_forward_stdin,
                args=(proc.write, proc.close_stdin),
                name="dockyard-exec-stdin",
                daemon=True,
            ).start()
        else:
            # A terminal's keystrokes are not the command's input: it gets an empty stdin, as with `ssh -n`.
            proc.close_stdin()
        while True:
            try:
                event = proc.recv()
            except KeyboardInterrupt:
                if interrupted:
                    raise typer.Exit(130) from None
                # The first Ctrl-C goes to the command, as it would in a terminal; a second one leaves it.
                interrupted = True
                proc.signal("INT")
                continue
            except streams.StreamClosed as exc:
                raise CliError(str(exc)) from None
            if isinstance(event, streams.Output):
                sink = sys.stdout.buffer if event.stream == streams.STDOUT else sys.stderr.buffer
                sink.write(event.data)
                sink.flush()
                continue
            if event.timed_out:
                assert request.timeout is not None
                took = format_duration(timedelta(seconds=request.timeout))
                output.error(f"the command was killed after the --timeout of {took}")
                return 124
            return _exit_status(event)


# --- ssh -------------------------------------------------------------------------------------------------------


def proxy_command(target: str) -> str:
    return f"{sshconfig.dockyard_command()} ssh --stdio {shlex.quote(target)}".replace("%", "%%")


def ssh_arguments(
    setup: sshkeys.SshSetup, *, target: str, user: str, command: Sequence[str], tty: bool
) -> list[str]:
    files = setup.files
    args = [
        "ssh",
        "-o", f"ProxyCommand={proxy_command(target)}",
        "-o", f"HostKeyAlias={setup.gateway.host_key_alias}",
        "-o", f"UserKnownHostsFile={sshconfig.ssh_path(files.known_hosts)}",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"CertificateFile={sshconfig.ssh_path(files.certificate)}",
        "-i", str(files.private_key).replace("%", "%%"),
        "-o", "IdentitiesOnly=yes",
        "-l", user,
    ]  # fmt: skip
    if tty:
        args.append("-tt")
    # `--` before the host: nothing after it (the host, then the command) is read as an option of ssh.
    return [*args, "--", f"dockyard.{user}", *command]


def _run_ssh(args: list[str]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(args[0], args)  # noqa: S606 - replacing this process with ssh, argv as built above


def ssh(
    workspace: WorkspaceArg,
    command: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="COMMAND",
            help="Run this instead of a login shell; put `--` before it.",
            show_default=False,
        ),
    ] = None,
    stdio: Annotated[
        bool,
        typer.Option(
            "--stdio",
            help="Carry the SSH protocol on stdin/stdout: the ProxyCommand for SSH clients and IDEs.",
        ),
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait until the workspace runs and its agent is ready.")
    ] = True,
    timeout: Annotated[str, typer.Option("--timeout", help="How long to wait at most, e.g. 30m.")] = "30m",
    host_prefix: Annotated[
        str,
        typer.Option(
            "--host-prefix",
            help="With --stdio: NAME is a host name (`%h` in ssh_config) starting with this, as config-ssh writes.",
        ),
    ] = "",
) -> None:
    """Open an SSH session to a workspace (starting it when stopped), with OpenSSH's own client."""
    if stdio:
        if command:
            raise CliError("--stdio takes no command")
        # The program's entry point runs this without importing the CLI (`cli/proxy.py`); this is the same
        # command reached through Typer, e.g. with --debug.
        from dockyard.cli import proxy

        _stdio(proxy.workspace_ref(workspace, host_prefix))
        return
    limit = _seconds(timeout, "--timeout", unit=3600)
    if shutil.which("ssh") is None:
        raise CliError("ssh was not found", hint="install OpenSSH's client (the `ssh` command)")
    with config.session() as client:
        found = client.get_workspace(workspace)
        found = ensure_running(client, found, ref=workspace, wait=wait, timeout=limit)
        setup = sshkeys.ensure_certificate(client)
    # The gateway reads `owner.name` as someone else's workspace; the ProxyCommand names it by id anyway.
    user = f"{found.owner_name}.{found.name}" if "/" in workspace else found.name
    tty = not command and sys.stdin.isatty() and sys.stdout.isatty()
    _run_ssh(ssh_arguments(setup, target=found.id, user=user, command=command or [], tty=tty))


def _write_stdout(data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(1, view)
        view = view[written:]


def _renew_quietly(credentials: config.Credentials) -> None:
    client = config.client_factory(credentials.url, credentials.token)
    try:
        sshkeys.renew_if_expiring(client, within=_RENEW_WITHIN)
    except (ApiError, CliError, ConnectionFailed, OSError, ValueError):
        # Only a convenience for the next connection; this one is not to be disturbed by it.
        pass
    finally:
        client.close()


def _stdio(ref: str) -> None:
    # Nothing but the SSH bytes may reach stdout: errors leave through DockyardGroup, on stderr.
    credentials = config.credentials()
    with config.connect(credentials.url, credentials.token) as client:
        tunnel = client.ssh_tunnel(_target(client, ref))
        if sshkeys.key_files().private_key.exists():
            threading.Thread(
                target=_renew_quietly, args=(credentials,), name="dockyard-ssh-cert", daemon=True
            ).start()
        with tunnel:
            streams.splice(tunnel, lambda: os.read(0, streams.CHUNK), _write_stdout)
