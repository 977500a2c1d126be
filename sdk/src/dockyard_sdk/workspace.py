"""`Workspace`: a handle on one workspace, for scripts and orchestrators.

    from dockyard_sdk import Client

    client = Client()                                   # DOCKYARD_URL / DOCKYARD_TOKEN, or `dockyard login`
    with client.create("ai-agent-sandbox", ttl="1h", parameters={"repo": "github.com/org/app"}) as ws:
        ws.files.write("notes/task.md", "fix the flaky test")
        result = ws.exec("pytest -q", cwd="project", timeout=600, on_stdout=print)
        print(result.exit_code, result.truncated)
    # leaving the block deleted the workspace (keep=True keeps it)

Relative paths are taken from the workspace user's home folder. Every call has a time limit: a call that runs
past it raises `Timeout`, and a command it started is killed first.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from dockyard_sdk import models as m
from dockyard_sdk.errors import BuildFailed, ConnectionFailed, NotFound, Timeout
from dockyard_sdk.lazy import load_later

if TYPE_CHECKING:
    from dockyard_sdk import streams
    from dockyard_sdk.client import Client
else:
    # websockets loads when a stream is first used: scripts that only make REST calls never need it.
    streams = load_later("dockyard_sdk.streams")

# Receives one line of output (without its newline), or a raw chunk when the caller asked for bytes.
OutputCallback = Callable[[str], Any] | Callable[[bytes], Any]
Wait = Literal["running", "ready", "done"] | None
WAITS = ("running", "ready", "done", None)
# A command's own timeout is enforced by the agent; the client gives the agent this much longer to say so.
_GRACE = 10.0


def check_command(command: object) -> str | list[str]:
    if isinstance(command, str):
        if not command.strip():
            raise ValueError("command must not be empty")
        return command
    if isinstance(command, Sequence) and not isinstance(command, bytes):
        argv = list(command)
        if not argv or not all(isinstance(part, str) for part in argv):
            raise TypeError("command must be a shell string or a non-empty list of strings")
        return argv
    raise TypeError(f"command must be a str or a list of str, not {type(command).__name__}")


def check_timeout(timeout: object, name: str = "timeout") -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"{name} must be a number of seconds, not {type(timeout).__name__}")
    if timeout <= 0:
        raise ValueError(f"{name} must be positive, not {timeout}")
    return float(timeout)


def check_wait(wait: object) -> Wait:
    if wait not in WAITS:
        raise ValueError(f"wait must be one of 'running', 'ready', 'done' or None, not {wait!r}")
    return wait  # type: ignore[return-value]


def check_path(path: object) -> str:
    if not isinstance(path, str):
        raise TypeError(f"path must be a str, not {type(path).__name__}")
    if not path or "\x00" in path:
        raise ValueError(f"path {path!r} is empty or holds a NUL character")
    return path


class _Lines:
    """Turns output chunks into whole lines for a callback; bytes pass through untouched when asked."""

    def __init__(self, callback: OutputCallback | None, *, text: bool) -> None:
        self.callback = callback
        self.text = text
        self.pending = b""

    def feed(self, data: bytes) -> None:
        if self.callback is None:
            return
        if not self.text:
            self.callback(data)  # type: ignore[arg-type]
            return
        self.pending += data
        *lines, self.pending = self.pending.split(b"\n")
        for line in lines:
            self.callback(line.decode(errors="replace"))  # type: ignore[arg-type]

    def flush(self) -> None:
        if self.callback is not None and self.text and self.pending:
            self.callback(self.pending.decode(errors="replace"))  # type: ignore[arg-type]
        self.pending = b""


class _Collector:
    """Keeps up to `limit` bytes of each stream, as the REST exec does, and feeds the callbacks."""

    def __init__(
        self,
        *,
        limit: int,
        on_stdout: OutputCallback | None,
        on_stderr: OutputCallback | None,
        text: bool,
    ) -> None:
        self.limit = limit
        self.out = bytearray()
        self.err = bytearray()
        self.truncated = {streams.STDOUT: False, streams.STDERR: False}
        self.lines = {
            streams.STDOUT: _Lines(on_stdout, text=text),
            streams.STDERR: _Lines(on_stderr, text=text),
        }

    def add(self, chunk: streams.Output) -> None:
        kept = self.out if chunk.stream == streams.STDOUT else self.err
        room = self.limit - len(kept)
        if room < len(chunk.data):
            self.truncated[chunk.stream] = True
        kept.extend(chunk.data[: max(room, 0)])
        self.lines[chunk.stream].feed(chunk.data)

    def result(self, exited: streams.Exited, started: float) -> m.ExecResult:
        for lines in self.lines.values():
            lines.flush()
        return m.ExecResult(
            exit_code=exited.exit_code,
            signal=exited.signal,
            stdout=self.out.decode(errors="replace"),
            stderr=self.err.decode(errors="replace"),
            stdout_truncated=self.truncated[streams.STDOUT],
            stderr_truncated=self.truncated[streams.STDERR],
            timed_out=exited.timed_out,
            duration_ms=(time.monotonic() - started) * 1000,
        )


class Process:
    """A command started with `exec(..., background=True)`: feed it, kill it, or wait for its result."""

    def __init__(self, stream: streams.ExecStream, collector: _Collector, *, deadline: float | None) -> None:
        self._stream = stream
        self._collector = collector
        self._deadline = deadline
        self._started = time.monotonic()
        self._result: m.ExecResult | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="dockyard-exec", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            while True:
                remaining = None if self._deadline is None else self._deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    self._give_up()
                    return
                event = self._stream.recv(remaining)
                if isinstance(event, streams.Output):
                    self._collector.add(event)
                else:
                    self._result = self._collector.result(event, self._started)
                    return
        except TimeoutError:
            self._give_up()
        except (streams.StreamClosed, ConnectionFailed, OSError) as exc:
            self._error = ConnectionFailed(f"the command's stream ended before it exited: {exc}")
        except BaseException as exc:  # noqa: BLE001 - handed to the caller of wait(), which re-raises it
            self._error = exc
        finally:
            self._stream.close()
            self._done.set()

    def _give_up(self) -> None:
        self._kill_quietly()
        self._error = Timeout("the command did not exit within its timeout and was killed")

    def _kill_quietly(self) -> None:
        # Already gone is fine: closing the stream kills what is left of its process group anyway.
        with contextlib.suppress(streams.StreamClosed, ConnectionFailed, OSError):
            self._stream.signal("KILL")

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    def write_stdin(self, data: str | bytes) -> None:
        if not isinstance(data, str | bytes):
            raise TypeError(f"data must be str or bytes, not {type(data).__name__}")
        self._stream.write(data.encode() if isinstance(data, str) else data)

    def close_stdin(self) -> None:
        self._stream.close_stdin()

    def kill(self, signal: str = "KILL") -> None:
        """Send a signal (KILL by default) to the command's process group."""
        if self.running:
            self._stream.signal(signal)

    def wait(self, timeout: float | None = None) -> m.ExecResult:
        """The result once the command exits; `Timeout` if it has not after `timeout` seconds."""
        if timeout is not None:
            check_timeout(timeout)
        if not self._done.wait(timeout):
            raise Timeout(f"the command is still running after {timeout:g} s")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.running:
            self._kill_quietly()
            self._stream.close()
        self._done.wait(_GRACE)


class Files:
    """File operations in one workspace; relative paths start at the workspace user's home folder."""

    def __init__(self, client: Client, workspace_id: str) -> None:
        self._client = client
        self._workspace_id = workspace_id

    def read(self, path: str) -> bytes:
        return self._client.read_file(self._workspace_id, check_path(path))

    def read_text(self, path: str, *, encoding: str = "utf-8") -> str:
        return self.read(path).decode(encoding)

    def write(self, path: str, data: str | bytes, *, mode: int | None = None) -> m.FileWritten:
        """Write a whole file, making its parent folders; `str` is written as UTF-8."""
        if not isinstance(data, str | bytes | bytearray):
            raise TypeError(f"data must be str or bytes, not {type(data).__name__}")
        if mode is not None and (not isinstance(mode, int) or not 0 <= mode <= 0o7777):
            raise ValueError(f"mode must be permission bits such as 0o644, not {mode!r}")
        payload = data.encode() if isinstance(data, str) else bytes(data)
        return self._client.write_file(self._workspace_id, check_path(path), payload, mode=mode)

    def list(self, path: str = ".") -> list[m.FileEntry]:
        return self._client.list_files(self._workspace_id, check_path(path)).entries

    def remove(self, path: str, *, recursive: bool = False) -> None:
        self._client.delete_file(self._workspace_id, check_path(path), recursive=recursive)

    def exists(self, path: str) -> bool:
        folder, _, name = check_path(path).rstrip("/").rpartition("/")
        try:
            return any(entry.name == name for entry in self.list(folder or "."))
        except NotFound:
            return False


class Workspace:
    """One workspace. Attributes mirror the last state read (`refresh()` reads it again); `info` is all of it."""

    def __init__(self, client: Client, info: m.Workspace, *, keep: bool = True) -> None:
        self._client = client
        self.info = info
        self.keep = keep
        self.files = Files(client, info.id)

    def __repr__(self) -> str:
        return f"<Workspace {self.info.owner_name}/{self.name} {self.status}>"

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def owner(self) -> str:
        return self.info.owner_name

    @property
    def template(self) -> str:
        return self.info.template_name

    @property
    def status(self) -> m.WorkspaceStatus:
        return self.info.status

    @property
    def agent(self) -> m.WorkspaceAgent | None:
        return self.info.agent

    @property
    def parameters(self) -> dict[str, Any]:
        return self.info.parameters

    @property
    def task(self) -> m.TaskStatus | None:
        """The coding task's last reported state (`dockyard-agent report` inside, `report_task` outside)."""
        return self.info.task

    # --- state -------------------------------------------------------------------------------------------------

    def refresh(self) -> Workspace:
        self.info = self._client.get_workspace(self.id)
        return self

    def wait(self, until: Wait = "ready", *, timeout: float = 300) -> Workspace:
        """Block until the workspace is `running`, `ready` (its agent ran the startup script) or `done`.

        Raises `Timeout` when that has not happened after `timeout` seconds.
        """
        until = check_wait(until)
        timeout = check_timeout(timeout)
        if until is None:
            return self.refresh()
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            # The server holds one long poll for at most 10 minutes.
            self.info = self._client.get_workspace(self.id, wait=until, timeout=min(max(remaining, 0.1), 600))
            if _reached(self.info, until):
                if until != "done" and self.status != m.WorkspaceStatus.RUNNING:
                    raise BuildFailed(
                        f"workspace {self.name} is {self.status.value}, not {until}"
                        + (f": {self.info.status_reason}" if self.info.status_reason else ""),
                        workspace=self.info,
                    )
                return self
            if time.monotonic() >= deadline:
                raise Timeout(
                    f"workspace {self.name} is not {until} after {timeout:g} s "
                    f"(status {self.status.value}{', ' + self.info.status_reason if self.info.status_reason else ''})"
                )

    def start(self, *, wait: Wait = "ready", timeout: float = 300) -> Workspace:
        self._client.start_workspace(self.id)
        return self.wait(wait, timeout=timeout)

    def stop(self, *, wait: bool = True, timeout: float = 120) -> Workspace:
        self._client.stop_workspace(self.id)
        return self.wait("done" if wait else None, timeout=timeout)

    def restart(self, *, wait: Wait = "ready", timeout: float = 300) -> Workspace:
        self.stop(timeout=timeout)
        return self.start(wait=wait, timeout=timeout)

    def delete(self, *, wait: bool = True, timeout: float = 120) -> None:
        """Delete the workspace and everything in it; with `wait`, return once it is gone."""
        timeout = check_timeout(timeout)
        try:
            self._client.delete_workspace(self.id)
            if wait:
                self.wait("done", timeout=timeout)
        except NotFound:
            return

    def extend(self, ttl: str | int | float) -> Workspace:
        """Move the deadline to `ttl` from now (`"2h"`, or seconds) without restarting anything."""
        if isinstance(ttl, bool) or not isinstance(ttl, str | int | float):
            raise TypeError(f"ttl must be a duration such as '2h' or seconds, not {type(ttl).__name__}")
        self.info = self._client.set_ttl(self.id, ttl)
        return self

    def report_task(
        self, state: str, summary: str = "", *, links: Mapping[str, str] | None = None
    ) -> Workspace:
        """Set the task state (`working`, `idle`, `waiting_input`, `done`, `failed`), e.g. with a PR link."""
        try:
            report = m.TaskReport(
                state=m.TaskState(state),
                summary=summary,
                links=[m.TaskLink(name=name, url=url) for name, url in (links or {}).items()],
            )
        except ValueError as exc:
            raise ValueError(f"invalid task report: {exc}") from exc
        self.info = self._client.report_task(self.id, report)
        return self

    def wait_for_task(
        self, states: Sequence[str] = ("done", "failed"), *, timeout: float = 3600
    ) -> m.TaskStatus:
        """Block until the task reports one of `states`; woken by the server's event stream, not by polling."""
        wanted = {m.TaskState(state) for state in states}
        timeout = check_timeout(timeout)
        result: list[m.TaskStatus] = []

        def watch() -> None:
            for info in self._client.watch_workspace(self.id):
                self.info = info
                if info.task is not None and info.task.state in wanted:
                    result.append(info.task)
                    return

        watcher = threading.Thread(target=watch, name="dockyard-task-watch", daemon=True)
        watcher.start()
        watcher.join(timeout)
        if not result:
            raise Timeout(f"workspace {self.name}'s task did not reach {sorted(states)} in {timeout:g} s")
        return result[0]

    # --- commands ----------------------------------------------------------------------------------------------

    def exec(
        self,
        command: str | Sequence[str],
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        stdin: str | None = None,
        timeout: float = 60,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        background: bool = False,
        text: bool = True,
        max_output_bytes: int = 2**20,
    ) -> Any:
        """Run a command (a shell string, or an argv list run as is) and return its `ExecResult`.

        `on_stdout`/`on_stderr` receive each line as it arrives (raw byte chunks with `text=False`).
        `background=True` returns a `Process` at once instead. The command is killed after `timeout` seconds
        (`result.timed_out`); if even that answer does not come, the call raises `Timeout`.
        """
        request = m.ExecRequest(
            command=check_command(command),
            cwd=cwd,
            env=dict(env or {}),
            stdin=stdin,
            timeout=check_timeout(timeout),
            max_output_bytes=max_output_bytes,
        )
        if not background and on_stdout is None and on_stderr is None:
            return self._client.exec(self.id, request)
        process = self._start(request, on_stdout=on_stdout, on_stderr=on_stderr, text=text)
        return process if background else process.wait()

    def _start(
        self,
        request: m.ExecRequest,
        *,
        on_stdout: OutputCallback | None,
        on_stderr: OutputCallback | None,
        text: bool,
    ) -> Process:
        stream = self._client.exec_stream(self.id, request)
        collector = _Collector(
            limit=request.max_output_bytes, on_stdout=on_stdout, on_stderr=on_stderr, text=text
        )
        return Process(stream, collector, deadline=time.monotonic() + request.timeout + _GRACE)

    def pty(self, *, width: int = 80, height: int = 24, reconnect: str | None = None) -> streams.Pty:
        """A terminal; reattach later with `pty(reconnect=term.reconnect)` to get its recent output back."""
        return self._client.pty(self.id, reconnect=reconnect, width=width, height=height)

    # --- context manager ---------------------------------------------------------------------------------------

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.keep:
            self.delete()


_ACTIVE_BUILDS = (m.BuildStatus.PENDING, m.BuildStatus.RUNNING, m.BuildStatus.CANCELING)
_READY = (m.AgentLifecycle.READY, m.AgentLifecycle.START_ERROR, m.AgentLifecycle.START_TIMEOUT)


def _reached(info: m.Workspace, until: Wait) -> bool:
    """Whether a wait is over: the state wanted, or one from which it can no longer come (as the server judges)."""
    settled = info.latest_build.status not in _ACTIVE_BUILDS
    if until == "ready" and settled and info.status == m.WorkspaceStatus.RUNNING:
        return info.agent is not None and info.agent.lifecycle in _READY
    return settled or (until == "running" and info.status == m.WorkspaceStatus.RUNNING)
