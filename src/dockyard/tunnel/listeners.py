"""The hub's listening sockets: one in each workspace's link folder, so the listener names the workspace.

Link folders are made by provisioner workers, in this process or in a `dockyard provisioner` process on the
same data dir. Workers in this process say so at once (`link_changed`); a sweep every second catches the rest,
and a socket someone removed (or a folder made afresh) is listened on again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from dockyard import logs as logging
from dockyard.tunnel.links import AgentLinks, Origin

log = logging.get(__name__)

# Unix socket paths are limited to 108 bytes by the kernel; longer ones are bound through /proc/self/fd.
MAX_SOCKET_PATH = 107
SWEEP_INTERVAL = 1.0
BACKLOG = 128

Accept = Callable[[Origin, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class _Listening:
    server: asyncio.Server
    inode: int


def bind_unix(path: Path) -> socket.socket:
    """A listening unix socket at `path` (replacing a stale one), connectable by any user who reaches it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        dirfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path.name, dir_fd=dirfd)
            # Through the folder's descriptor the address stays short whatever the data dir's path.
            short = len(os.fsencode(str(path))) <= MAX_SOCKET_PATH
            sock.bind(str(path) if short else f"/proc/self/fd/{dirfd}/{path.name}")
            # The folder is what keeps others out: it is mounted into one workspace and unreachable on the host.
            os.chmod(path.name, 0o666, dir_fd=dirfd)  # noqa: S103
        finally:
            os.close(dirfd)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class LinkSockets:
    def __init__(self, links: AgentLinks, accept: Accept) -> None:
        self.links = links
        self.accept = accept
        self._listening: dict[str, _Listening] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()

    def listening(self) -> set[str]:
        return set(self._listening)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.links.ensure_root()
        await self.sync()
        self.links.subscribe(self)

    def link_changed(self, workspace_id: str) -> None:
        """Called by a worker thread when it made or removed a link folder."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop is shutting down; the next start sweeps
            asyncio.run_coroutine_threadsafe(self.sync_one(workspace_id), loop)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            try:
                await self.sync()
            except OSError as exc:
                log.warning("agent link sweep failed", error=str(exc))

    async def sync(self) -> None:
        for workspace_id in self.links.workspace_ids() | set(self._listening):
            await self.sync_one(workspace_id)

    async def sync_one(self, workspace_id: str) -> None:
        async with self._lock:
            path = self.links.socket_path(workspace_id)
            current = self._listening.get(workspace_id)
            try:
                inode: int | None = os.stat(path).st_ino
            except FileNotFoundError:
                inode = None
            if current is not None and inode == current.inode:
                return
            if current is not None:
                # Its socket file is gone or was replaced: that listener is unreachable now.
                current.server.close()
                del self._listening[workspace_id]
            if not self.links.exists(workspace_id):
                return
            try:
                sock = bind_unix(path)
            except OSError as exc:
                log.warning("cannot listen in agent link", workspace=workspace_id, error=str(exc))
                return
            origin = Origin(workspace_id, "socket")

            async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                await self.accept(origin, reader, writer)

            server = await asyncio.start_unix_server(accept, sock=sock)
            self._listening[workspace_id] = _Listening(server, os.stat(path).st_ino)

    async def close(self) -> None:
        self.links.unsubscribe(self)
        async with self._lock:
            for workspace_id, current in self._listening.items():
                current.server.close()
                # Agents then see "no such file" and keep re-dialing until a server listens again.
                path = self.links.socket_path(workspace_id)
                with contextlib.suppress(FileNotFoundError):
                    if os.stat(path).st_ino == current.inode:
                        path.unlink()
            self._listening.clear()
