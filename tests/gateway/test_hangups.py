"""SSH connections over the WebSocket route that end before their handshake, against a real `dockyard server`:
each must close its socket once. On uvloop the socket object of such a connection kept a descriptor its
transport had already closed, and its finalizer closed that number again, whatever it had become by then (the
server's SQLite database, a connection to the engine); see `let_go` in gateway/server.py."""

from __future__ import annotations

import base64
import os
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from websockets.sync.client import connect

from tests.live import LiveServer, start_live_server, stop_live_server

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

HANGUPS = 30


@pytest.fixture(scope="module")
def server(base_image: str) -> Iterator[LiveServer]:
    # Python reports a socket object collected with its descriptor still set (the second close) as a
    # ResourceWarning, which the server's log then shows.
    live = start_live_server(env_extra={"PYTHONWARNINGS": "always::ResourceWarning"})
    try:
        yield live
    finally:
        stop_live_server(live)


def test_ssh_connections_that_hang_up_before_the_handshake_close_their_socket_once(
    server: LiveServer,
) -> None:
    ws = server.workspace("hangups")
    url = server.url.replace("http://", "ws://", 1) + f"/api/v2/workspaces/{ws.id}/ssh"
    for index in range(HANGUPS):
        if index % 3 == 0:
            # Upgraded, then gone without a closing handshake (a killed ProxyCommand).
            with socket.create_connection(urlsplit(server.url).netloc.split(":"), timeout=30) as raw:
                raw.sendall(_upgrade(urlsplit(url).path, server.token))
                assert raw.recv(4096).startswith(b"HTTP/1.1 101")
            continue
        with connect(url, additional_headers={"Authorization": f"Bearer {server.token}"}) as conn:
            if index % 3 == 2:
                # These wait for the gateway's version line first, as a client that gives up would.
                assert isinstance(conn.recv(timeout=30), bytes)
    # The server still reads its database after them; these requests also allocate enough for the collector
    # to run, which is when a socket object left in a reference cycle is finalized.
    for _ in range(300):
        assert server.client.get_workspace(ws.id).status.value == "running"
    time.sleep(1)
    log = server.log()
    assert "unclosed <socket" not in log
    assert "Bad file descriptor" not in log
    assert "disk I/O error" not in log


def _upgrade(path: str, token: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: dockyard\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()
