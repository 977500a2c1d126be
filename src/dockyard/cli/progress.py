"""`--wait`: follow a build until it ends, showing its status changes and its log on stderr.

The log streams in a thread of its own while the command polls the workspace; a build that fails or is canceled
prints the end of its log, and a build left behind (a timeout, Ctrl-C) goes on without this process.
"""

from __future__ import annotations

import queue
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from datetime import timedelta
from types import TracebackType
from typing import Self

import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from dockyard.cli import config, output
from dockyard.cli.errors import CliError
from dockyard.cli.render import log_text, seconds_text
from dockyard.sdk import ApiError, Client, ConnectionFailed
from dockyard.sdk import models as m
from dockyard.units import format_duration

ACTIVE = frozenset({m.BuildStatus.PENDING, m.BuildStatus.RUNNING, m.BuildStatus.CANCELING})
_POLL_SECONDS = 0.5
# Once the build has ended the server closes the log stream within a poll; this only bounds a stuck one.
_LOG_GRACE_SECONDS = 5.0
_LOG_TAIL = 20
_LOG_WINDOW = 10


class LiveStatus(ABC):
    """A spinner with the newest log lines under it, redrawn on stderr while a terminal watches; elsewhere (CI,
    a pipe) nothing is drawn and subclasses print each change for good instead."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = time.monotonic()
        self.window: deque[str] = deque(maxlen=_LOG_WINDOW)
        self.spinner = Spinner("dots")
        console = Console(stderr=True, highlight=False)
        self.live = (
            Live(console=console, transient=True, get_renderable=self._render, refresh_per_second=8)
            if console.is_terminal
            else None
        )

    def __enter__(self) -> Self:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.live is not None:
            self.live.stop()

    @abstractmethod
    def label(self) -> str:
        """The text next to the spinner."""

    def _render(self) -> RenderableType:
        elapsed = format_duration(timedelta(seconds=int(time.monotonic() - self.started)))
        self.spinner.update(text=Text(f"{self.label()} ({elapsed})"))
        lines = [Text(line, style="dim", no_wrap=True, overflow="ellipsis") for line in self.window]
        return Group(*lines, self.spinner)


class _Progress(LiveStatus):
    """What --wait shows on stderr: status changes, and the build's log lines as they stream.

    On a terminal the newest log lines scroll under a spinner and vanish when the build ends (a failure prints
    its tail for good); elsewhere (CI, a pipe) every line is printed, since nothing can be taken back there.
    """

    def __init__(self, name: str) -> None:
        # Before the base class: it renders the label once as it builds its display.
        self.status: m.WorkspaceStatus | None = None
        self.shown = 0  # id of the last log line printed for good
        super().__init__(name)

    def label(self) -> str:
        return f"{self.name} is {self.status.value if self.status else 'waiting'}"

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


def wait(
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
                if latest.id != build.id or latest.status not in ACTIVE:
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
