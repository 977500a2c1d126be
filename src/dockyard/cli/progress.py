"""`--wait`: follow a build until it ends, showing its status changes and its log on stderr.

The log streams in a thread of its own while the command polls the workspace; a build that fails or is canceled
prints the end of its log, and a build left behind (a timeout, Ctrl-C) goes on without this process.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Self

import typer

from dockyard.cli import config, output, transitions
from dockyard.cli.render import log_text
from dockyard_sdk import ApiError, Client, ConnectionFailed
from dockyard_sdk import models as m
from dockyard_sdk.units import format_duration

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.live import Live

ACTIVE = frozenset({m.BuildStatus.PENDING, m.BuildStatus.RUNNING, m.BuildStatus.CANCELING})
# How often the workspace is read while its build runs, to show status changes; the build's end comes sooner,
# with the log stream's end event.
_POLL_SECONDS = 0.5
_LOG_TAIL = 20
_STARTUP_STAGE = "startup_script"
_LOG_WINDOW = 10
# Settings that make Rich treat a non-tty as a terminal; without one of them, and stderr no tty, Rich is not loaded.
_TERMINAL_SETTINGS = ("FORCE_TERMINAL", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")


def _maybe_terminal() -> bool:
    return sys.stderr.isatty() or any(os.environ.get(name) for name in _TERMINAL_SETTINGS)


class LiveStatus(ABC):
    """A spinner with the newest log lines under it, redrawn on stderr while a terminal watches; elsewhere (CI,
    a pipe) nothing is drawn and subclasses print each change for good instead."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = time.monotonic()
        self.window: deque[str] = deque(maxlen=_LOG_WINDOW)
        self.live: Live | None = None
        if _maybe_terminal():
            # Rich (a tenth of a second to import) only where something is drawn: a CI log never needs it.
            from rich.console import Console
            from rich.live import Live
            from rich.spinner import Spinner

            self.spinner = Spinner("dots")
            console = Console(stderr=True, highlight=False)
            if console.is_terminal:
                self.live = Live(
                    console=console, transient=True, get_renderable=self._render, refresh_per_second=8
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
        from rich.console import Group
        from rich.text import Text

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
            from rich.text import Text

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

    The server ends the stream with the build (its `end` event), so a None after no error means the build has
    ended. Runs in a thread with a client of its own: when waiting is given up the stream is left to end with the
    build (or with the process), after the command has closed its own client.
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


class _Log:
    """The log lines `wait` has shown, and whether the stream told of the build's end."""

    def __init__(self, lines: queue.Queue[_LogItem], progress: _Progress) -> None:
        self.lines = lines
        self.progress = progress
        self.cursor = 0  # id of the last line shown
        self.ended = False  # the stream closed after the build ended
        self.broken = False  # the stream failed: the workspace is polled instead

    def show(self, line: m.BuildLogLine) -> None:
        if line.id > self.cursor:
            self.cursor = line.id
            # The startup script's output is the agent's, shown by whoever waits for the agent (`create`).
            if line.stage != _STARTUP_STAGE:
                self.progress.log(line)

    def drain(self, *, seconds: float) -> None:
        """Show the lines that arrive within `seconds`; return early when the stream ends."""
        until = time.monotonic() + seconds
        while not self.ended:
            if self.broken:
                time.sleep(max(0.0, until - time.monotonic()))
                return
            try:
                item = self.lines.get(timeout=max(0.0, until - time.monotonic()))
            except queue.Empty:
                return
            self._take(item)

    def _take(self, item: _LogItem) -> None:
        if isinstance(item, m.BuildLogLine):
            self.show(item)
        elif item is None:
            self.ended = True
        else:
            self.broken = True
            self.progress.say(f"warning: cannot follow the build log: {item}")

    def catch_up(self, client: Client, build_id: str) -> None:
        """Show the lines not streamed yet, once the build has ended: asked for, not waited for."""
        while not (self.ended or self.broken):
            try:
                item = self.lines.get_nowait()
            except queue.Empty:
                break
            self._take(item)
        if not (self.ended or self.broken):
            for line in client.build_logs(build_id, after=self.cursor):
                self.show(line)


def wait(
    client: Client, workspace: m.Workspace, build: m.WorkspaceBuild, *, ref: str, timeout: float
) -> m.Workspace:
    """Show `build`'s progress until it ends and return the workspace then.

    Returns as soon as the log stream's end event says the build has ended (the workspace is polled meanwhile
    only to show its status, and as the fallback when the stream fails). A failed or canceled build, or a
    timeout, is a `CliError` (exit 1). Ctrl-C stops waiting (exit 130) but leaves the build running: it belongs
    to the server, not to this process.
    """
    lines: queue.Queue[_LogItem] = queue.Queue()
    follower = threading.Thread(
        target=_follow,
        args=(config.credentials(), build.id, lines),
        name=f"dockyard-build-logs-{build.id}",
        daemon=True,
    )
    progress = _Progress(workspace.name)
    log = _Log(lines, progress)
    deadline = time.monotonic() + timeout
    try:
        follower.start()
        with progress:
            while True:
                current = client.get_workspace(workspace.id)
                latest = current.latest_build
                if latest.id != build.id or latest.status not in ACTIVE:
                    break
                if log.ended:
                    # The end event and this read passed each other: the build's end is committed by now.
                    log.ended = False
                    log.broken = True
                progress.change(current.status)
                if time.monotonic() >= deadline:
                    raise transitions.timed_out(
                        workspace.name, current.status.value, timeout=timeout, number=build.number, ref=ref
                    )
                log.drain(seconds=min(_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
            log.catch_up(client, build.id)
    except KeyboardInterrupt:
        output.message(f"Stopped waiting; {_follow_hint(build, ref)}.")
        raise typer.Exit(130) from None
    finished = latest if latest.id == build.id else client.get_build(build.id)
    if finished.status is not m.BuildStatus.SUCCEEDED:
        _print_tail(client, finished, after=progress.shown)
        raise transitions.failed(
            workspace.name,
            number=finished.number,
            transition=finished.transition.value,
            status=finished.status.value,
            detail=current.status_reason or finished.error or "",
            ref=ref,
        )
    took = finished.timings.get("total")
    output.message(
        transitions.done_text(workspace.name, current.status.value, number=finished.number, took=took)
    )
    return current


def _follow_hint(build: m.WorkspaceBuild, ref: str) -> str:
    return transitions.follow_hint(build.number, ref)


def _print_tail(client: Client, build: m.WorkspaceBuild, *, after: int) -> None:
    """The end of a failed build's log, but none of the lines already on screen."""
    tail = [line for line in client.build_logs(build.id)[-_LOG_TAIL:] if line.id > after]
    if tail:
        output.message(f"Last lines of build #{build.number}'s log:")
        for line in tail:
            output.message(log_text(line))
