"""The ProxyCommand's own WebSocket framing (`cli/proxy.py`), against RFC 6455 frames written by hand on a
socket pair. The whole path, with OpenSSH and a live server, is in test_connect_live.py."""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from dockyard.cli.errors import CliError
from dockyard.cli.proxy import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Refused,
    WebSocket,
)


def frame(opcode: int, payload: bytes, *, final: bool = True) -> bytes:
    """A server's frame: unmasked."""
    first = (0x80 if final else 0) | opcode
    if len(payload) < 126:
        return struct.pack("!BB", first, len(payload)) + payload
    if len(payload) < 2**16:
        return struct.pack("!BBH", first, 126, len(payload)) + payload
    return struct.pack("!BBQ", first, 127, len(payload)) + payload


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    """A client's frame, unmasked here; clients must mask every frame."""

    def exactly(size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = sock.recv(size - len(data))
            assert chunk, "the client closed the socket"
            data += chunk
        return data

    first, second = exactly(2)
    assert first & 0x80, "final"
    assert second & 0x80, "masked"
    size = second & 0x7F
    if size == 126:
        (size,) = struct.unpack("!H", exactly(2))
    elif size == 127:
        (size,) = struct.unpack("!Q", exactly(8))
    mask = exactly(4)
    payload = exactly(size)
    return first & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@pytest.fixture
def pair() -> Iterator[tuple[WebSocket, socket.socket]]:
    client, server = socket.socketpair()
    with client, server:
        yield WebSocket(client, b""), server


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 300_001])
def test_frames_sent_are_masked_and_sized(pair: tuple[WebSocket, socket.socket], size: int) -> None:
    ws, server = pair
    data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    server.settimeout(10)
    sender = threading.Thread(target=ws.send, args=(data,))
    sender.start()
    assert read_frame(server) == (OP_BINARY, data)
    sender.join()


def test_messages_fragments_pings_and_a_normal_close(pair: tuple[WebSocket, socket.socket]) -> None:
    ws, server = pair
    server.sendall(
        frame(OP_BINARY, b"hel", final=False)
        + frame(OP_PING, b"are you there")
        + frame(OP_CONTINUATION, b"lo")
        + frame(OP_BINARY, b"")  # an empty message is no end of stream
        + frame(OP_TEXT, json.dumps({"type": "info"}).encode())  # the server's word, not SSH bytes
        + frame(OP_BINARY, b"world")
        + frame(OP_CLOSE, struct.pack("!H", 1000))
    )
    assert ws.recv() == b"hello"
    assert read_frame(server) == (OP_PONG, b"are you there")
    assert ws.recv() == b"world"
    assert ws.recv() == b""
    assert read_frame(server) == (OP_CLOSE, struct.pack("!H", 1000))


def test_an_error_close_is_the_status_it_stands_for(pair: tuple[WebSocket, socket.socket]) -> None:
    ws, server = pair
    server.sendall(frame(OP_CLOSE, struct.pack("!H", 4409) + b"Workspace dev is stopped."))
    with pytest.raises(Refused) as info:
        ws.recv()
    assert (info.value.status, info.value.message) == (409, "Workspace dev is stopped.")


def test_an_error_message_ends_the_stream(pair: tuple[WebSocket, socket.socket]) -> None:
    ws, server = pair
    server.sendall(frame(OP_TEXT, json.dumps({"type": "error", "error": "the agent went away"}).encode()))
    with pytest.raises(CliError, match=r"^the agent went away$"):
        ws.recv()


def test_a_lost_connection(pair: tuple[WebSocket, socket.socket]) -> None:
    ws, server = pair
    server.sendall(frame(OP_BINARY, b"partial")[:4])
    server.shutdown(socket.SHUT_WR)
    with pytest.raises(CliError, match=r"^the connection to Dockyard was lost$"):
        ws.recv()
