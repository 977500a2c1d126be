"""`AsyncClient`: the `Client` surface for asyncio programs.

    async with AsyncClient() as client:
        async with client.create("ai-agent-sandbox", ttl="1h") as ws:
            result = await ws.exec("pytest -q", on_stdout=log_line)   # plain or async callbacks
            await ws.files.write("out.txt", result.stdout)

Each call runs the synchronous client on a worker thread (`asyncio.to_thread`), so the event loop never blocks
and both clients share one implementation, one set of errors and one wire contract. Async callbacks run on the
caller's event loop, one at a time and in order.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import inspect
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from dockyard_sdk import models as m
from dockyard_sdk import streams
from dockyard_sdk.client import Client
from dockyard_sdk.workspace import Process, Wait, Workspace

P = ParamSpec("P")
T = TypeVar("T")
AsyncOutputCallback = Callable[[str], Any] | Callable[[bytes], Any] | Callable[[Any], Awaitable[Any]]


async def _run(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    return await asyncio.to_thread(functools.partial(function, *args, **kwargs))


def _on_loop(callback: AsyncOutputCallback | None, loop: asyncio.AbstractEventLoop) -> Any:
    """A callback the worker thread can call: coroutine functions are run on `loop` and awaited there."""
    if callback is None or not inspect.iscoroutinefunction(callback):
        return callback

    def call(data: Any) -> None:
        # Waiting here keeps the lines in order and slows the reader to the callback's pace.
        asyncio.run_coroutine_threadsafe(callback(data), loop).result()

    return call


class AsyncProcess:
    """A background command: `await wait()`, `await kill()`, `await write_stdin(...)`."""

    def __init__(self, process: Process) -> None:
        self._process = process

    @property
    def running(self) -> bool:
        return self._process.running

    async def wait(self, timeout: float | None = None) -> m.ExecResult:
        return await _run(self._process.wait, timeout)

    async def kill(self, signal: str = "KILL") -> None:
        await _run(self._process.kill, signal)

    async def write_stdin(self, data: str | bytes) -> None:
        await _run(self._process.write_stdin, data)

    async def close_stdin(self) -> None:
        await _run(self._process.close_stdin)

    async def __aenter__(self) -> AsyncProcess:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await _run(self._process.__exit__, None, None, None)


class AsyncFiles:
    def __init__(self, workspace: Workspace) -> None:
        self._files = workspace.files

    async def read(self, path: str) -> bytes:
        return await _run(self._files.read, path)

    async def read_text(self, path: str, *, encoding: str = "utf-8") -> str:
        return await _run(self._files.read_text, path, encoding=encoding)

    async def write(self, path: str, data: str | bytes, *, mode: int | None = None) -> m.FileWritten:
        return await _run(self._files.write, path, data, mode=mode)

    async def list(self, path: str = ".") -> builtins.list[m.FileEntry]:
        return await _run(self._files.list, path)

    async def remove(self, path: str, *, recursive: bool = False) -> None:
        await _run(self._files.remove, path, recursive=recursive)

    async def exists(self, path: str) -> bool:
        return await _run(self._files.exists, path)


class AsyncWorkspace:
    """The async twin of `Workspace`; `sync` is the synchronous handle underneath."""

    def __init__(self, workspace: Workspace) -> None:
        self.sync = workspace
        self.files = AsyncFiles(workspace)

    def __repr__(self) -> str:
        return repr(self.sync).replace("<Workspace", "<AsyncWorkspace", 1)

    @property
    def info(self) -> m.Workspace:
        return self.sync.info

    @property
    def id(self) -> str:
        return self.sync.id

    @property
    def name(self) -> str:
        return self.sync.name

    @property
    def status(self) -> m.WorkspaceStatus:
        return self.sync.status

    @property
    def agent(self) -> m.WorkspaceAgent | None:
        return self.sync.agent

    async def refresh(self) -> AsyncWorkspace:
        await _run(self.sync.refresh)
        return self

    async def wait(self, until: Wait = "ready", *, timeout: float = 300) -> AsyncWorkspace:
        await _run(self.sync.wait, until, timeout=timeout)
        return self

    async def start(self, *, wait: Wait = "ready", timeout: float = 300) -> AsyncWorkspace:
        await _run(self.sync.start, wait=wait, timeout=timeout)
        return self

    async def stop(self, *, wait: bool = True, timeout: float = 120) -> AsyncWorkspace:
        await _run(self.sync.stop, wait=wait, timeout=timeout)
        return self

    async def restart(self, *, wait: Wait = "ready", timeout: float = 300) -> AsyncWorkspace:
        await _run(self.sync.restart, wait=wait, timeout=timeout)
        return self

    async def delete(self, *, wait: bool = True, timeout: float = 120) -> None:
        await _run(self.sync.delete, wait=wait, timeout=timeout)

    async def extend(self, ttl: str | int | float) -> AsyncWorkspace:
        await _run(self.sync.extend, ttl)
        return self

    async def exec(
        self,
        command: str | Sequence[str],
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        stdin: str | None = None,
        timeout: float = 60,
        on_stdout: AsyncOutputCallback | None = None,
        on_stderr: AsyncOutputCallback | None = None,
        background: bool = False,
        text: bool = True,
        max_output_bytes: int = 2**20,
    ) -> Any:
        """As `Workspace.exec`; callbacks may be coroutine functions. Background commands are `AsyncProcess`."""
        loop = asyncio.get_running_loop()
        result = await _run(
            self.sync.exec,
            command,
            cwd=cwd,
            env=env,
            stdin=stdin,
            timeout=timeout,
            on_stdout=_on_loop(on_stdout, loop),
            on_stderr=_on_loop(on_stderr, loop),
            background=background,
            text=text,
            max_output_bytes=max_output_bytes,
        )
        return AsyncProcess(result) if isinstance(result, Process) else result

    async def pty(self, *, width: int = 80, height: int = 24, reconnect: str | None = None) -> streams.Pty:
        return await _run(self.sync.pty, width=width, height=height, reconnect=reconnect)

    async def __aenter__(self) -> AsyncWorkspace:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self.sync.keep:
            await self.delete()


class _Creating:
    """What `AsyncClient.create` returns: await it for the handle, or use it in `async with`."""

    def __init__(self, start: Callable[[], Awaitable[AsyncWorkspace]]) -> None:
        # A factory, not a coroutine: nothing starts (or warns of never being awaited) until it is used.
        self._start = start
        self._workspace: AsyncWorkspace | None = None

    def __await__(self) -> Generator[Any, None, AsyncWorkspace]:
        return self._start().__await__()

    async def __aenter__(self) -> AsyncWorkspace:
        self._workspace = await self._start()
        return self._workspace

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._workspace is not None:
            await self._workspace.__aexit__(kind, error, trace)


class AsyncClient:
    """`Client` for asyncio: the same constructor (environment or `dockyard login` by default), async methods.

    `sync` is the synchronous `Client` underneath, for the endpoint methods (`await asyncio.to_thread(...)`).
    """

    def __init__(self, url: str | None = None, token: str | None = None, **options: Any) -> None:
        self.sync = Client(url, token, **options)

    @property
    def url(self) -> str:
        return self.sync.url

    def create(
        self,
        template: str,
        *,
        name: str | None = None,
        ttl: str | int | None = None,
        parameters: Mapping[str, Any] | None = None,
        wait: Wait = "ready",
        timeout: float = 300,
        keep: bool = False,
    ) -> _Creating:
        """`await client.create(...)` or `async with client.create(...) as ws:` (deleted on exit unless keep)."""

        async def start() -> AsyncWorkspace:
            workspace = await _run(
                self.sync.create,
                template,
                name=name,
                ttl=ttl,
                parameters=parameters,
                wait=wait,
                timeout=timeout,
                keep=keep,
            )
            return AsyncWorkspace(workspace)

        return _Creating(start)

    async def get(self, workspace: str) -> AsyncWorkspace:
        return AsyncWorkspace(await _run(self.sync.get, workspace))

    async def list(self, **filters: Any) -> builtins.list[AsyncWorkspace]:
        found = await _run(self.sync.list, **filters)
        return [AsyncWorkspace(workspace) for workspace in found]

    async def list_templates(self) -> builtins.list[m.Template]:
        return await _run(self.sync.list_templates)

    async def aclose(self) -> None:
        await _run(self.sync.close)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
