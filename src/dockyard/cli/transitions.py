"""`dockyard start | stop | restart NAME`, on the standard library alone.

Their builds take a tenth of a second to a second, and importing Typer, pydantic, httpx and the wire models took
longer than that. So `dockyard.cli.entry` runs the forms `parse_args` understands here, with the SDK's
standard-library client (`dockyard_sdk.plain`); the Typer commands (`cli/workspaces.py`, `cli/progress.py`) take
everything else (`--help`, `-o json`, a bad value) and print the same lines, built by the functions below. On a
terminal the log scrolls under a spinner drawn on the standard library too (`cli/live.py`).

The wait follows the build log's event stream, which the server wakes on the build's events and ends with the
build's `end` event: nothing here sleeps or polls.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote

from dockyard.cli.errors import CliError
from dockyard_sdk.plain import PlainClient
from dockyard_sdk.units import format_duration, parse_duration

if TYPE_CHECKING:
    from dockyard.cli.live import Live

VERBS = {"start": "Starting", "stop": "Stopping", "delete": "Deleting"}
_ACTIVE = frozenset({"pending", "running", "canceling"})
_STARTUP_STAGE = "startup_script"
_LOG_TAIL = 20
_DEFAULT_TIMEOUT = "30m"
_MAX_SERVER_WAIT = 600  # the most `GET /workspaces/{id}?wait=done` waits in one request
# Settings that make Rich draw on a non-tty (cli/progress.py); with one, the Typer command draws its spinner.
_TERMINAL_SETTINGS = ("FORCE_TERMINAL", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")


class TransitionArgs(NamedTuple):
    command: str  # start, stop or restart
    ref: str
    wait: bool = True
    timeout: float = 30 * 60.0


# --- the lines both paths print -----------------------------------------------------------------------------


def seconds_text(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.2f}s"
    return format_duration(timedelta(seconds=round(seconds)))


def log_line_text(moment: datetime, stage: str, text: str) -> str:
    # UTC, like every time the CLI prints, so that a log reads the same wherever it is looked at.
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return f"{moment:%H:%M:%S} {stage:<9} | {text}"


def queued_text(transition: str, ref: str, number: int) -> str:
    return f"{VERBS[transition]} {ref} (build #{number})"


def follow_text(ref: str) -> str:
    return f"Follow its progress with `dockyard logs {ref} --follow`"


def follow_hint(number: int, ref: str) -> str:
    return (
        f"build #{number} goes on: follow it with `dockyard logs {ref} --follow`, "
        f"or cancel it with `dockyard cancel {ref}`"
    )


def timed_out(name: str, status: str, *, timeout: float, number: int, ref: str) -> CliError:
    return CliError(
        f"timed out after {format_duration(timedelta(seconds=timeout))} waiting for {name} (still {status})",
        hint=follow_hint(number, ref),
    )


def failed(name: str, *, number: int, transition: str, status: str, detail: str, ref: str) -> CliError:
    verb = "was canceled" if status == "canceled" else "failed"
    return CliError(
        f"build #{number} ({transition}) of {name} {verb}",
        detail=detail,
        hint=f"see its whole log with `dockyard logs {ref} --build {number}`",
    )


def done_text(name: str, status: str, *, number: int, took: float | None) -> str:
    return f"Workspace {name} is {status}" + (
        f" (build #{number} took {seconds_text(took)})" if took is not None else ""
    )


# --- arguments ----------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> TransitionArgs | None:
    """`start|stop|restart NAME [--wait|--no-wait] [--timeout D]`; None for anything else (`--help`, `-o json`,
    a value Typer would refuse, a setting that makes Rich draw on a non-tty), which the Typer command then
    parses and explains."""
    if not argv or argv[0] not in ("start", "stop", "restart") or forced_terminal():
        return None
    ref, wait, timeout = None, True, _DEFAULT_TIMEOUT
    rest = list(argv[1:])
    while rest:
        arg = rest.pop(0)
        if arg in ("--wait", "--no-wait"):
            wait = arg == "--wait"
        elif arg == "--timeout" and rest:
            timeout = rest.pop(0)
        elif arg.startswith("--timeout="):
            timeout = arg.partition("=")[2]
        elif arg.startswith("-") or ref is not None:
            return None
        else:
            ref = arg
    if not ref:
        return None
    try:
        seconds = parse_duration(timeout).total_seconds()
    except ValueError:
        return None
    if seconds <= 0:
        return None
    return TransitionArgs(argv[0], ref, wait=wait, timeout=seconds)


def forced_terminal() -> bool:
    """A setting that makes Rich draw its spinner where no terminal is (a CI log that renders ANSI): the
    Typer commands honour it. A real terminal gets the standard-library spinner (`cli/live.py`)."""
    return not sys.stderr.isatty() and any(os.environ.get(name) for name in _TERMINAL_SETTINGS)


def display(label: Callable[[], str]) -> AbstractContextManager[Live | None]:
    """The spinner and log window on a terminal; elsewhere nothing, and every line is printed for good."""
    from dockyard.cli import live

    return live.Live(label) if live.wanted() else nullcontext()


# --- the commands -------------------------------------------------------------------------------------------


def segment(value: str) -> str:
    return quote(value, safe="")


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def message(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def get_workspace(client: PlainClient, ref: str) -> dict[str, Any]:
    """A workspace by id, name or owner/name, as `Client.get_workspace` finds it."""
    if "/" in ref:
        owner, _, name = ref.partition("/")
        ref = client.get_json(f"/api/v2/users/{segment(owner)}/workspace/{segment(name)}")["id"]
    return dict(client.get_json(f"/api/v2/workspaces/{segment(ref)}"))


class _Wait:
    """Following one build to its end, printing what `progress.wait` prints: on a terminal the log lines
    scroll under a spinner and vanish when the build ends; elsewhere every line is printed."""

    def __init__(
        self, client: PlainClient, workspace: dict[str, Any], build: dict[str, Any], *, ref: str
    ) -> None:
        self.client = client
        self.workspace = workspace
        self.build = build
        self.ref = ref
        self.cursor = 0  # id of the last log line seen
        self.shown = 0  # id of the last log line printed for good
        self.status = ""
        self.live: Live | None = None

    def say(self, text: str) -> None:
        if self.live is not None:
            self.live.say(text)
        else:
            message(text)

    def show(self, line: dict[str, Any]) -> None:
        if line["id"] > self.cursor:
            self.cursor = line["id"]
            # The startup script's output is the agent's, shown by whoever waits for the agent (`create`).
            if line["stage"] != _STARTUP_STAGE:
                text = log_line_text(parse_time(line["time"]), line["stage"], line["output"])
                if self.live is not None:
                    self.live.add(text)
                else:
                    message(text)
                    self.shown = line["id"]

    def follow(self, timeout: float) -> dict[str, Any]:
        """Show the build's log until its end event; return the workspace then."""
        with display(lambda: f"{self.workspace['name']} is {self.status or 'waiting'}") as self.live:
            try:
                return self._follow(timeout)
            finally:
                self.live = None

    def _follow(self, timeout: float) -> dict[str, Any]:
        name, build_id = self.workspace["name"], self.build["id"]
        current = self.client.get_json(f"/api/v2/workspaces/{segment(self.workspace['id'])}")
        ended = False  # the stream's end event came: every line of the build has been shown
        if current["latest_build"]["id"] == build_id and current["latest_build"]["status"] in _ACTIVE:
            # The status as the build began: the Typer command prints it on its first look, as here.
            self.status = current["status"]
            self.say(f"{name}: {self.status}")
            try:
                for event, data in self.client.events(
                    f"/api/v2/workspacebuilds/{segment(build_id)}/logs",
                    {"follow": "true", "after": self.cursor},
                    timeout=timeout,
                ):
                    if event == "log":
                        self.show(json.loads(data))
                    elif event == "end":
                        ended = True
                        break
            except self._timeout() as exc:
                raise timed_out(
                    name, current["status"], timeout=timeout, number=self.build["number"], ref=self.ref
                ) from exc
            except self._broken() as exc:
                self.say(f"warning: cannot follow the build log: {exc}")
            current = self._ended(timeout)
        if not ended:
            # The build ended before the first look, or the stream broke off: the lines it did not bring.
            for line in self.client.get_json(
                f"/api/v2/workspacebuilds/{segment(build_id)}/logs", {"after": self.cursor}
            ):
                self.show(line)
        return dict(current)

    @staticmethod
    def _timeout() -> type[Exception]:
        from dockyard_sdk.errors import Timeout

        return Timeout

    @staticmethod
    def _broken() -> tuple[type[Exception], ...]:
        from dockyard_sdk.errors import ApiError, ConnectionFailed

        return (ApiError, ConnectionFailed)

    def _ended(self, timeout: float) -> dict[str, Any]:
        # The end event is sent once the build's end is committed, so the first read sees it; `wait=done`
        # covers a stream that broke off early (a wait the server answers when the build ends, not a poll).
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            current = self.client.get_json(
                f"/api/v2/workspaces/{segment(self.workspace['id'])}",
                {"wait": "done", "timeout": max(1, min(_MAX_SERVER_WAIT, int(left)))},
            )
            latest = current["latest_build"]
            if latest["id"] != self.build["id"] or latest["status"] not in _ACTIVE:
                return dict(current)
            if time.monotonic() >= deadline:
                raise timed_out(
                    self.workspace["name"],
                    current["status"],
                    timeout=timeout,
                    number=self.build["number"],
                    ref=self.ref,
                )

    def finish(self, current: dict[str, Any]) -> dict[str, Any]:
        """Print the build's outcome: its time, or the tail of its log and a `CliError`."""
        build_id = self.build["id"]
        latest = current["latest_build"]
        finished = (
            latest
            if latest["id"] == build_id
            else self.client.get_json(f"/api/v2/workspacebuilds/{segment(build_id)}")
        )
        name = self.workspace["name"]
        if finished["status"] != "succeeded":
            logs = self.client.get_json(f"/api/v2/workspacebuilds/{segment(build_id)}/logs")
            tail = [line for line in logs[-_LOG_TAIL:] if line["id"] > self.shown]
            if tail:
                message(f"Last lines of build #{finished['number']}'s log:")
                for line in tail:
                    message(log_line_text(parse_time(line["time"]), line["stage"], line["output"]))
            raise failed(
                name,
                number=finished["number"],
                transition=finished["transition"],
                status=finished["status"],
                detail=current.get("status_reason") or finished.get("error") or "",
                ref=self.ref,
            )
        took = (finished.get("timings") or {}).get("total")
        message(done_text(name, current["status"], number=finished["number"], took=took))
        return current


def apply(
    client: PlainClient, workspace: dict[str, Any], transition: str, *, ref: str, wait: bool, timeout: float
) -> dict[str, Any]:
    """Queue a build and (with `wait`) follow it to its end: `workspaces._apply` without the wire models."""
    build = client.post_json(
        f"/api/v2/workspaces/{segment(workspace['id'])}/builds", {"transition": transition}
    )
    message(queued_text(transition, ref, build["number"]))
    if not wait:
        message(follow_text(ref))
        return get_workspace(client, workspace["id"])
    return wait_build(client, workspace, build, ref=ref, timeout=timeout)


def wait_build(
    client: PlainClient, workspace: dict[str, Any], build: dict[str, Any], *, ref: str, timeout: float
) -> dict[str, Any]:
    """Follow `build` to its end event and print its outcome (`progress.wait` without the wire models); return
    the workspace then. A failed build is a `CliError`; Ctrl-C leaves the build running."""
    waiting = _Wait(client, workspace, build, ref=ref)
    try:
        return waiting.finish(waiting.follow(timeout))
    except KeyboardInterrupt:
        message(f"Stopped waiting; {follow_hint(build['number'], ref)}.")
        raise


def run(client: PlainClient, args: TransitionArgs) -> None:
    workspace = get_workspace(client, args.ref)
    if args.command == "restart":
        # The server runs one build at a time per workspace, so the stop is always waited for.
        if workspace["status"] != "stopped":
            workspace = apply(client, workspace, "stop", ref=args.ref, wait=True, timeout=args.timeout)
        apply(client, workspace, "start", ref=args.ref, wait=args.wait, timeout=args.timeout)
    else:
        apply(client, workspace, args.command, ref=args.ref, wait=args.wait, timeout=args.timeout)


def main(args: TransitionArgs) -> int:
    """The command before Typer is imported: exit code 0, or 1 after an `error: …` on stderr (130: Ctrl-C)."""
    from dockyard.cli import fastpath

    return fastpath.run(lambda client: run(client, args))
