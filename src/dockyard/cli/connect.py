"""Getting into a workspace: `dockyard exec | ssh | port-forward`, and waiting for its agent to be ready.

Every path ends in a WebSocket to the server (`sdk.streams`), which pairs it with a stream from the workspace's
agent; `ssh` hands the terminal to OpenSSH, with this same program as its ProxyCommand (`ssh --stdio`).
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import shlex
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Annotated

import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from dockyard.cli import config, output, progress, sshkeys
from dockyard.cli.errors import CliError, build_request
from dockyard.cli.output import OutputFormat, OutputOption
from dockyard.cli.render import log_text, seconds_text
from dockyard.sdk import ApiError, Client, ConnectionFailed
from dockyard.sdk import models as m
from dockyard.sdk.streams import CHUNK, STDOUT, ByteStream, Exited, Output, StreamClosed, splice
from dockyard.units import format_duration, parse_duration

WorkspaceArg = Annotated[
    str, typer.Argument(metavar="NAME", help="Workspace: your workspace's name, owner/name, or an id.")
]
_STARTABLE = {m.WorkspaceStatus.STOPPED, m.WorkspaceStatus.FAILED, m.WorkspaceStatus.CANCELED}
_SETTLED = {m.AgentLifecycle.READY, m.AgentLifecycle.START_ERROR, m.AgentLifecycle.START_TIMEOUT}
_POLL_SECONDS = 1.0
_LOG_TAIL = 20
_STARTUP_STAGE = "startup_script"
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


class _AgentProgress:
    """The agent's state on stderr: a spinner with the newest startup-script lines on a terminal, every change
    and line printed elsewhere."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = ""
        self.started = time.monotonic()
        self.lines: list[str] = []
        self.spinner = Spinner("dots")
        console = Console(stderr=True, highlight=False)
        self.live = (
            Live(console=console, transient=True, get_renderable=self._render, refresh_per_second=8)
            if console.is_terminal
            else None
        )

    def __enter__(self) -> _AgentProgress:
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
        self.spinner.update(text=Text(f"{self.name}: {self.state or _WAITING} ({elapsed})"))
        window = [Text(line, style="dim", no_wrap=True, overflow="ellipsis") for line in self.lines[-10:]]
        return Group(*window, self.spinner)

    def change(self, state: str) -> None:
        if state != self.state:
            self.state = state
            if self.live is None:
                output.message(f"{self.name}: {state}")

    def log(self, line: m.BuildLogLine) -> None:
        if self.live is not None:
            self.lines.append(log_text(line))
        else:
            output.message(log_text(line))


_WAITING = "waiting for the agent"


def _agent_state(agent: m.WorkspaceAgent | None) -> str:
    if agent is None or agent.status is not m.AgentConnection.CONNECTED:
        return _WAITING
    if agent.lifecycle is m.AgentLifecycle.STARTING:
        return "running the startup script"
    return f"agent {agent.lifecycle.value}"


def wait_ready(
    client: Client, workspace: m.Workspace, *, ref: str, timeout: float, strict: bool
) -> m.Workspace:
    """Wait until the running workspace's agent has connected and finished its startup script.

    A failed or timed-out startup script prints the end of its output; with `strict` it is then an error (exit
    1), otherwise a warning (an SSH session is how one repairs a startup script).
    """
    deadline = time.monotonic() + timeout
    build_id = workspace.latest_build.id
    seen = client.build_logs(build_id)
    cursor = seen[-1].id if seen else 0
    current = workspace
    try:
        with _AgentProgress(workspace.name) as shown:
            while current.agent is None or current.agent.lifecycle not in _SETTLED:
                if current.status is not m.WorkspaceStatus.RUNNING:
                    raise CliError(
                        f"{workspace.name} is {current.status.value}, not running",
                        detail=current.status_reason,
                        hint=f"see its builds with `dockyard builds {ref}`",
                    )
                shown.change(_agent_state(current.agent))
                for line in client.build_logs(build_id, after=cursor):
                    cursor = line.id
                    if line.stage == _STARTUP_STAGE:
                        shown.log(line)
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
    except KeyboardInterrupt:
        output.message("Stopped waiting for the agent.")
        raise typer.Exit(130) from None
    agent = current.agent
    if agent.lifecycle is m.AgentLifecycle.READY:
        took = (
            f" (startup script took {seconds_text((agent.ready_at - agent.started_at).total_seconds())})"
            if agent.started_at is not None and agent.ready_at is not None
            else ""
        )
        output.message(f"Workspace {workspace.name} is ready{took}")
        return current
    problem = (
        f"the startup script of {workspace.name} failed with exit code {agent.exit_code}"
        if agent.lifecycle is m.AgentLifecycle.START_ERROR
        else f"the startup script of {workspace.name} did not finish within its startup timeout"
    )
    tail = [line for line in client.build_logs(build_id) if line.stage == _STARTUP_STAGE][-_LOG_TAIL:]
    if not strict:
        output.warning(problem)
    if tail:
        output.message("Last lines of the startup script's output:")
        for line in tail:
            output.message(log_text(line))
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
    if current.status in _STARTABLE:
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
    return wait_ready(client, current, ref=ref, timeout=remaining, strict=False)


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


def _exit_status(exited: Exited) -> int:
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
    return bytes(read1(CHUNK) if read1 is not None else stream.read(CHUNK))


def _forward_stdin(proc_write: Callable[[bytes], None], close: Callable[[], None]) -> None:
    try:
        while data := _read_stdin():
            proc_write(data)
        close()
    except (OSError, ValueError, StreamClosed, ApiError, ConnectionFailed):
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
            except StreamClosed as exc:
                raise CliError(str(exc)) from None
            if isinstance(event, Output):
                sink = sys.stdout.buffer if event.stream == STDOUT else sys.stderr.buffer
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
    return f"{sshkeys.dockyard_command()} ssh --stdio {shlex.quote(target)}".replace("%", "%%")


def ssh_arguments(
    setup: sshkeys.SshSetup, *, target: str, user: str, command: Sequence[str], tty: bool
) -> list[str]:
    files = setup.files
    args = [
        "ssh",
        "-o", f"ProxyCommand={proxy_command(target)}",
        "-o", f"HostKeyAlias={setup.gateway.host_key_alias}",
        "-o", f"UserKnownHostsFile={sshkeys.ssh_path(files.known_hosts)}",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"CertificateFile={sshkeys.ssh_path(files.certificate)}",
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
) -> None:
    """Open an SSH session to a workspace (starting it when stopped), with OpenSSH's own client."""
    if stdio:
        if command:
            raise CliError("--stdio takes no command")
        _stdio(workspace)
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
            splice(tunnel, lambda: os.read(0, CHUNK), _write_stdout)


# --- port-forward ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PortSpec:
    local: int
    remote: int


def parse_port_spec(text: str) -> PortSpec:
    """`LOCAL:REMOTE`, or `PORT` for the same number on both sides."""
    parts = text.split(":")
    if len(parts) > 2 or not all(re.fullmatch(r"\d{1,5}", part) for part in parts):
        raise ValueError(f"{text!r} is not LOCAL:REMOTE (e.g. 8080:80) or PORT")
    numbers = [int(part) for part in parts]
    for number in numbers:
        if not 1 <= number <= 65535:
            raise ValueError(f"{text!r}: port {number} is not between 1 and 65535")
    return PortSpec(numbers[0], numbers[-1])


def parse_port_specs(texts: Sequence[str]) -> list[PortSpec]:
    specs = [parse_port_spec(text) for text in texts]
    locals_ = [spec.local for spec in specs]
    for port in sorted({p for p in locals_ if locals_.count(p) > 1}):
        raise ValueError(f"local port {port} is given more than once")
    return specs


class _Forwarder:
    """Accepted connections, each spliced with a `dial` stream of its own in a thread."""

    def __init__(self, client: Client, target: str, name: str) -> None:
        self.client = client
        self.target = target
        self.name = name
        self.lock = threading.Lock()
        self.active: set[socket.socket] = set()

    def handle(self, connection: socket.socket, spec: PortSpec) -> None:
        with self.lock:
            self.active.add(connection)
        try:
            with self.client.dial(self.target, spec.remote) as stream:
                self._splice(stream, connection)
        except (ApiError, ConnectionFailed) as exc:
            output.warning(
                f"127.0.0.1:{spec.local} -> {self.name}:{spec.remote}: {getattr(exc, 'message', exc)}"
            )
        except OSError:
            pass  # the local client went away
        finally:
            with self.lock:
                self.active.discard(connection)
            _close(connection)

    @staticmethod
    def _splice(stream: ByteStream, connection: socket.socket) -> None:
        splice(stream, lambda: connection.recv(CHUNK), connection.sendall)

    def close_all(self) -> None:
        with self.lock:
            for connection in self.active:
                _close(connection)


def _close(connection: socket.socket) -> None:
    # shutdown first: it wakes a thread blocked in recv(), which close() alone does not.
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)
    connection.close()


def port_forward(
    workspace: WorkspaceArg,
    tcp: Annotated[
        list[str] | None,
        typer.Option(
            "--tcp",
            metavar="LOCAL:REMOTE",
            help="Forward 127.0.0.1:LOCAL to port REMOTE in the workspace; repeat for more.",
        ),
    ] = None,
) -> None:
    """Forward local TCP ports to ports in a workspace until Ctrl-C."""
    try:
        if not tcp:
            raise ValueError("give at least one --tcp LOCAL:REMOTE")
        specs = parse_port_specs(tcp)
    except ValueError as exc:
        output.error(f"--tcp: {exc}")
        raise typer.Exit(2) from None
    with config.session() as client:
        found = client.get_workspace(workspace)
        if found.status is not m.WorkspaceStatus.RUNNING:
            raise CliError(
                f"{workspace} is {found.status.value}", hint=f"start it with `dockyard start {workspace}`"
            )
        listeners = _listen(specs)
        forwarder = _Forwarder(client, found.id, workspace)
        selector = selectors.DefaultSelector()
        for listener, spec in listeners:
            selector.register(listener, selectors.EVENT_READ, (listener, spec))
            output.message(f"Forwarding 127.0.0.1:{spec.local} -> {workspace}:{spec.remote}")
        try:
            while True:
                for key, _ in selector.select():
                    ready, spec = key.data
                    try:
                        connection, _address = ready.accept()
                    except OSError:
                        continue
                    # Accepted from a non-blocking listener; the copy threads want blocking reads.
                    connection.setblocking(True)
                    # Keystrokes and small requests go out at once instead of waiting to fill a segment.
                    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    threading.Thread(
                        target=forwarder.handle, args=(connection, spec), name="dockyard-forward", daemon=True
                    ).start()
        except KeyboardInterrupt:
            # Ctrl-C is how a forward ends: a clean stop, exit 0.
            output.message("Stopped forwarding.")
        finally:
            selector.close()
            for listener, _spec in listeners:
                listener.close()
            forwarder.close_all()


def _listen(specs: Sequence[PortSpec]) -> list[tuple[socket.socket, PortSpec]]:
    listeners: list[tuple[socket.socket, PortSpec]] = []
    try:
        for spec in specs:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listeners.append((listener, spec))
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", spec.local))
            listener.listen(128)
            listener.setblocking(False)
    except OSError as exc:
        for listener, _spec in listeners:
            listener.close()
        raise CliError(f"cannot listen on 127.0.0.1:{listeners[-1][1].local}: {exc.strerror or exc}") from exc
    return listeners
