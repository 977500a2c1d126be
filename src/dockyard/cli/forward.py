"""`dockyard port-forward`: local TCP ports carried to ports in a workspace over the `/dial` WebSocket."""

from __future__ import annotations

import contextlib
import re
import selectors
import signal
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import typer

from dockyard.cli import config, output
from dockyard.cli.connect import WorkspaceArg
from dockyard.cli.errors import CliError
from dockyard_sdk import ApiError, Client, ConnectionFailed
from dockyard_sdk import models as m
from dockyard_sdk.lazy import load_later

if TYPE_CHECKING:
    from dockyard_sdk import streams
else:
    streams = load_later("dockyard_sdk.streams")  # websockets loads with the first forwarded connection

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
    def _splice(stream: streams.ByteStream, connection: socket.socket) -> None:
        streams.splice(stream, lambda: connection.recv(streams.CHUNK), connection.sendall)

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
        # Ctrl-C and SIGTERM wake the loop through a socket instead of raising wherever the main thread happens
        # to be (inside a thread start or a library call, where an exception can leave things half done).
        wake, waker = socket.socketpair()
        selector.register(wake, selectors.EVENT_READ, None)
        previous = {
            signum: signal.signal(signum, lambda *_: waker.send(b"\0"))
            for signum in (signal.SIGINT, signal.SIGTERM)
        }
        for listener, spec in listeners:
            selector.register(listener, selectors.EVENT_READ, (listener, spec))
            output.message(f"Forwarding 127.0.0.1:{spec.local} -> {workspace}:{spec.remote}")
        try:
            stopping = False
            while not stopping:
                for key, _ in selector.select():
                    if key.data is None:
                        stopping = True
                        break
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
            # Ctrl-C is how a forward ends: a clean stop, exit 0.
            output.message("Stopped forwarding.")
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            wake.close()
            waker.close()
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
