"""The SDK's WebSocket streams: exec, terminals, dials and SSH tunnels against the in-process server with real
agents (running as local processes), plus the websockets transport against a small real WebSocket server."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from websockets.sync.server import Request, Response, ServerConnection, serve

from dockyard_sdk import ApiError, Client, ConnectionFailed
from dockyard_sdk import models as m
from dockyard_sdk.streams import Exited, Output, splice, websocket_url
from tests.harness import Harness
from tests.sdk.inprocess import in_process

pytestmark = pytest.mark.timeout(90)


def _ready(h: Harness, name: str = "ws") -> tuple[Client, m.Workspace]:
    h.template(name="tmpl")
    created = h.admin.create_workspace(m.CreateWorkspaceRequest(template="tmpl", name=name))
    ws = h.admin.get_workspace(created.id, wait="ready", timeout=30)
    assert ws.agent is not None
    assert ws.agent.lifecycle == m.AgentLifecycle.READY, ws.agent
    return in_process(h.admin, h.lifespan), ws


def _error(call: Callable[[], Any]) -> ApiError:
    with pytest.raises(ApiError) as info:
        call()
    return info.value


# --- exec ------------------------------------------------------------------------------------------------------


def test_exec_stream_splits_streams_feeds_stdin_and_ends_with_the_exit(ah: Harness) -> None:
    client, ws = _ready(ah)
    with client.exec_stream(ws.id, m.ExecRequest(command="cat; echo err >&2; exit 3")) as proc:
        proc.write(b"line one\n")
        proc.write(b"line two\n")
        proc.close_stdin()
        out, err, exited = proc.wait()
    assert (out, err, exited) == (b"line one\nline two\n", b"err\n", Exited(3, None))


def test_exec_stream_events_come_in_order_and_argv_runs_as_is(ah: Harness) -> None:
    client, ws = _ready(ah)
    request = m.ExecRequest(command=["printf", "%s|", "a b", "$HOME"], stdin="")
    with client.exec_stream(ws.id, request) as proc:
        events = list(proc)
    assert events == [Output(1, b"a b|$HOME|"), Exited(0, None)]


def test_exec_stream_stdin_field_is_sent_and_closed(ah: Harness) -> None:
    client, ws = _ready(ah)
    with client.exec_stream(ws.id, m.ExecRequest(command="wc -c", stdin="12345")) as proc:
        out, _, exited = proc.wait()
    assert (out.strip(), exited.exit_code) == (b"5", 0)


def test_exec_stream_signal_and_timeout(ah: Harness) -> None:
    client, ws = _ready(ah)
    with client.exec_stream(ws.id, m.ExecRequest(command="echo go; sleep 30", stdin="")) as proc:
        assert proc.recv(10) == Output(1, b"go\n")
        proc.signal("TERM")
        _, _, exited = proc.wait()
    assert exited.exit_code in (None, 143) or exited.signal == "TERM", exited
    with client.exec_stream(ws.id, m.ExecRequest(command="sleep 30", timeout=1, stdin="")) as proc:
        _, _, exited = proc.wait()
    assert exited == Exited(None, "KILL", timed_out=True)


def test_exec_stream_errors_are_api_errors(ah: Harness) -> None:
    client, ws = _ready(ah)
    missing = _error(lambda: client.exec_stream("nope", m.ExecRequest(command="true")))
    assert (missing.status_code, missing.message) == (404, "Workspace 'nope' not found.")
    client.stop_workspace(ws.id)
    ah.await_build(ws.id)
    stopped = _error(lambda: client.exec_stream(ws.id, m.ExecRequest(command="true")).wait())
    assert stopped.status_code == 409
    assert "stopped" in stopped.message


# --- terminals -------------------------------------------------------------------------------------------------


def _read_until(recv: Callable[[], bytes], marker: bytes) -> bytes:
    seen = b""
    while marker not in seen:
        chunk = recv()
        assert chunk, f"ended before {marker!r}: {seen!r}"
        seen += chunk
    return seen


def test_pty_runs_a_shell_resizes_and_reports_its_exit(ah: Harness) -> None:
    client, ws = _ready(ah)
    with client.pty(ws.id, width=100, height=30) as term:
        term.send(b"stty size; echo mark-$((6*7))\n")
        assert b"30 100" in _read_until(lambda: term.recv(10), b"mark-42")
        term.resize(120, 40)
        term.send(b"stty size; exit 5\n")
        _read_until(lambda: term.recv(10), b"40 120")
        while term.recv(10):
            pass
    assert term.exit_code == 5


def test_pty_reattaches_by_reconnect_id(ah: Harness) -> None:
    client, ws = _ready(ah)
    with client.pty(ws.id) as first:
        first.send(b"echo before-$((1+1))\n")
        _read_until(lambda: first.recv(10), b"before-2")
        reconnect = first.reconnect
    with client.pty(ws.id, reconnect=reconnect) as again:
        assert b"before-2" in _read_until(lambda: again.recv(10), b"before-2")
        again.send(b"exit\n")


# --- dials and SSH ---------------------------------------------------------------------------------------------


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A TCP server on this machine's loopback, which the local-process agents share."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve_one(connection: socket.socket) -> None:
        # The client may hang up before everything is echoed.
        with connection, contextlib.suppress(OSError):
            while data := connection.recv(65536):
                connection.sendall(data.upper())

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve_one, args=(connection,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield int(server.getsockname()[1])
    stop.set()
    server.close()


def test_dial_carries_bytes_both_ways(ah: Harness, echo_port: int) -> None:
    client, ws = _ready(ah)
    with client.dial(ws.id, echo_port) as tcp:
        tcp.send(b"hello")
        assert _read_until(lambda: tcp.recv(10), b"HELLO") == b"HELLO"
        big = bytes(range(97, 123)) * 100_000
        tcp.send(big)
        echoed = b""
        while len(echoed) < len(big):
            chunk = tcp.recv(10)
            assert chunk, len(echoed)
            echoed += chunk
        assert echoed == big.upper()


def test_dial_to_a_closed_port_is_refused(ah: Harness) -> None:
    client, ws = _ready(ah)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = _error(lambda: client.dial(ws.id, port))
    assert error.status_code == 400
    assert f"127.0.0.1:{port}" in error.message


def test_splice_copies_a_socket_through_a_dial(ah: Harness, echo_port: int) -> None:
    client, ws = _ready(ah)
    ours, theirs = socket.socketpair()
    stream = client.dial(ws.id, echo_port)
    copier = threading.Thread(target=splice, args=(stream, lambda: theirs.recv(65536), theirs.sendall))
    copier.start()
    ours.sendall(b"spliced")
    assert _read_until(lambda: ours.recv(100), b"SPLICED") == b"SPLICED"
    ours.close()  # the local end closing ends the stream
    copier.join(10)
    assert not copier.is_alive()
    theirs.close()


def test_ssh_tunnel_reaches_the_gateway(ah: Harness) -> None:
    client, ws = _ready(ah)
    with client.ssh_tunnel(ws.id) as tunnel:
        tunnel.send(b"SSH-2.0-dockyard-test\r\n")
        assert tunnel.recv(10).startswith(b"SSH-2.0-")
    assert _error(lambda: client.ssh_tunnel("nope")).status_code == 404


# --- the websockets transport ----------------------------------------------------------------------------------


def test_websocket_url_keeps_the_path_prefix_and_drops_none() -> None:
    assert websocket_url("http://h:3000", "/api/v2/x", {"a": 1, "b": None}) == "ws://h:3000/api/v2/x?a=1"
    assert websocket_url("https://h/dockyard/", "/api/v2/x") == "wss://h/dockyard/api/v2/x"
    with pytest.raises(ValueError, match="not an http"):
        websocket_url("ftp://h", "/x")


@pytest.fixture
def ws_server() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A real WebSocket server: /deny answers like Dockyard's refusals, /close4409 closes with 4409, /echo
    echoes; it records each handshake's headers."""
    seen: list[dict[str, str]] = []

    def handshake(connection: ServerConnection, request: Request) -> Response | None:
        seen.append({k.lower(): v for k, v in request.headers.raw_items()})
        if request.path.startswith("/deny"):
            body = json.dumps({"message": "Workspace 'x' not found.", "detail": "", "validations": []})
            response = connection.respond(404, body)
            response.headers["Content-Type"] = "application/json"
            return response
        return None

    def handler(connection: ServerConnection) -> None:
        if connection.request is not None and connection.request.path.startswith("/close4409"):
            connection.close(4409, "Workspace 'x' is stopped.")
            return
        for message in connection:
            connection.send(message)

    with serve(handler, "127.0.0.1", 0, process_request=handshake) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{server.socket.getsockname()[1]}", seen
        server.shutdown()


def test_real_websocket_sends_the_token_and_maps_errors(ws_server: tuple[str, list[dict[str, str]]]) -> None:
    url, seen = ws_server
    with Client(url, "dy_secret") as client:
        with client.open_websocket("/echo") as socket_:  # type: ignore[attr-defined]
            socket_.send_bytes(b"\x00\x01")
            assert socket_.recv(5) == b"\x00\x01"
            socket_.send_json({"type": "eof"})
            assert socket_.recv(5) == {"type": "eof"}
        assert seen[-1]["authorization"] == "Bearer dy_secret"
        assert seen[-1]["user-agent"].startswith("dockyard-sdk/")
        refused = _error(lambda: client.open_websocket("/deny"))
        assert (refused.status_code, refused.message) == (404, "Workspace 'x' not found.")
        closed = _error(lambda: client.open_websocket("/close4409").recv(5))
        assert (closed.status_code, closed.message) == (409, "Workspace 'x' is stopped.")


def test_unreachable_server_is_connection_failed() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with Client(f"http://127.0.0.1:{port}", "t") as client, pytest.raises(ConnectionFailed):
        client.open_websocket("/x")
